package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
	"golang.org/x/sync/singleflight"
)

// Verifier checks credentials on a mail server; *imapcheck.Verifier is the
// real one.
type Verifier interface {
	Verify(ctx context.Context, req imapcheck.Request) (imapcheck.Outcome, error)
}

// Resolver turns a backend's host into the literal IP nginx needs in
// Auth-Server; *backend.Resolver is the real one.
type Resolver interface {
	Resolve(ctx context.Context, host string) (netip.Addr, error)
}

// Health tells whether a backend's address for a protocol is up;
// *backend.Health is the real one.
type Health interface {
	Up(backend string, proto imapcheck.Protocol) bool
	// Recheck asks for a probe soon, without waiting for it.
	Recheck()
}

// Handler answers nginx's auth_http requests on any path. Its fields are
// set once before it serves.
type Handler struct {
	// Routes picks the user's backend.
	Routes backend.Chain
	// Verifier logs in to the backend with the client's credentials.
	Verifier Verifier
	// Resolver resolves the backend host sent to nginx.
	Resolver Resolver
	// SMTPVerify is the protocol SMTP logins are checked with on the
	// user's backend; nginx does not log in to SMTP backends itself, so
	// this check is all that stands between a guess and the relay.
	// Empty means IMAP.
	SMTPVerify imapcheck.Protocol
	// SMTPRelay, when set, is where unauthenticated SMTP (Auth-Method
	// none) is sent; nil refuses it.
	SMTPRelay *backend.Backend
	// SharedSecret, when set, must arrive in the X-Imapgate-Secret
	// header (nginx: auth_http_header); other requests get HTTP 403.
	SharedSecret string
	// Timeout bounds the whole decision; 0 means only the request's own
	// context does.
	Timeout time.Duration
	// Logger gets one line per login attempt; nil means slog.Default().
	Logger *slog.Logger
	// CacheTTL is how long a verified login is remembered, so that a
	// client reconnecting with the same password costs no backend login;
	// 0 turns the cache off.
	CacheTTL time.Duration
	// CacheSize bounds the cache's entries; 0 means 100,000.
	CacheSize int
	// Limits bounds password guessing; nil means no limits.
	Limits *Limits
	// MaxChecks bounds the checks in flight on each backend; more wait
	// for a slot, until their deadline. 0 means no bound.
	MaxChecks int
	// Metrics, when set, records what the handler does.
	Metrics *Metrics
	// Health, when set, says which backends answer their probes; a login
	// for a backend known to be down fails fast as temporary.
	Health Health
	// AllowFrom, when not empty, lists the networks requests may come
	// from (nginx's addresses); others get HTTP 403.
	AllowFrom []netip.Prefix

	once    sync.Once
	fp      *fingerprinter
	cache   *loginCache
	limiter *limiter
	slots   *checkSlots
	flight  singleflight.Group
}

// init builds the handler's state from its settings, once.
func (h *Handler) init() {
	h.fp = newFingerprinter()
	size := h.CacheSize
	if size <= 0 {
		size = 100_000
	}
	h.cache = newLoginCache(h.CacheTTL, size)
	if h.Limits != nil {
		h.limiter = newLimiter(*h.Limits)
	}
	h.slots = &checkSlots{perBackend: h.MaxChecks, slots: make(map[string]chan struct{})}
}

// Outcomes logged for a login attempt, beyond the verifier's own.
const (
	outcomeOK          = "ok"
	outcomeRejected    = "rejected"
	outcomeTemporary   = "temporary"
	outcomeUnsupported = "unsupported"
	outcomeRefused     = "refused"
	outcomeMalformed   = "malformed"
	outcomeForbidden   = "forbidden"
	outcomeThrottled   = "throttled"
)

// decision is an answer plus what the log needs to know about it.
type decision struct {
	resp    Response
	outcome string
	backend string
	// reason says why, for the log; err carries the backend's reply or
	// the network error.
	reason string
	err    error
	// loud marks what an operator must fix (an untrusted certificate, a
	// backend that cannot verify logins): logged as an error.
	loud bool
	// cached says the answer came from the cache; coalesced that it came
	// from a check another request made at the same moment.
	cached, coalesced bool
}

// ServeHTTP answers one auth_http request. It always answers with an
// Auth-Status (or 403 for a request without the shared secret), since
// anything else makes nginx show the client "internal server error".
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, resp, a := h.answer(r.Context(), httpFields(r.Header), stringAddr(r.RemoteAddr))
	if code == http.StatusForbidden {
		w.WriteHeader(code)
	} else {
		resp.Write(w, code)
	}
	h.record(a)
}

// attempt is a login attempt answered, for record.
type attempt struct {
	req   Request
	d     decision
	start time.Time
}

// answer answers one request, whatever server read it: the HTTP status
// code and, unless it is 403, nginx's answer. The caller sends the answer
// and then calls record, so that nginx does not wait for the log line.
func (h *Handler) answer(ctx context.Context, f fields, remote net.Addr) (int, Response, *attempt) {
	start := time.Now()
	h.once.Do(h.init)
	if !h.peerAllowed(remote) {
		h.logger().Warn("login", "outcome", outcomeForbidden, "reason", "peer not in IMAPGATE_ALLOW_FROM", "remote", remote.String())
		return http.StatusForbidden, Response{}, nil
	}
	if !h.secretOK(f) {
		h.logger().Warn("login", "outcome", outcomeForbidden, "reason", "missing or wrong "+secretHeader, "remote", remote.String())
		return http.StatusForbidden, Response{}, nil
	}
	req, err := parseRequest(f)
	if err != nil {
		h.Metrics.request("", outcomeMalformed)
		h.logger().Warn("login", "outcome", outcomeMalformed, "reason", err.Error(), "remote", remote.String())
		return http.StatusBadRequest, Response{Status: StatusMalformed}, nil
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	d := h.decide(ctx, req)
	return http.StatusOK, d.resp, &attempt{req: req, d: d, start: start}
}

// record counts and logs an answered attempt; nil is a request that was
// logged already (forbidden, malformed).
func (h *Handler) record(a *attempt) {
	if a == nil {
		return
	}
	h.Metrics.request(string(a.req.Protocol), a.d.outcome)
	h.log(a.req, a.d, time.Since(a.start))
}

// stringAddr is the peer's address as net/http gives it.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// peerAllowed reports whether the request's peer is in AllowFrom.
func (h *Handler) peerAllowed(remote net.Addr) bool {
	if len(h.AllowFrom) == 0 {
		return true
	}
	var ip netip.Addr
	if ta, ok := remote.(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr().Unmap()
	} else if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		ip = ap.Addr().Unmap()
	} else {
		return false
	}
	for _, p := range h.AllowFrom {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// secretOK reports whether the request carries the shared secret. Both
// sides are hashed first so the comparison takes the same time whatever
// the length of the guess.
func (h *Handler) secretOK(f fields) bool {
	if h.SharedSecret == "" {
		return true
	}
	secret, _ := f.field(secretHeader)
	got := sha256.Sum256([]byte(secret))
	want := sha256.Sum256([]byte(h.SharedSecret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// decide answers one parsed request.
func (h *Handler) decide(ctx context.Context, req Request) decision {
	switch req.Method {
	case MethodNone:
		return h.decideRelay(ctx, req)
	case MethodAPOP, MethodCRAMMD5, MethodExternal:
		// These methods give imapgate a digest or a certificate, not the
		// password, and nginx then needs the cleartext password back to log
		// in to the backend; a pass-through authenticator has neither.
		return decision{
			resp:    Response{Status: StatusMethod, ErrorCode: smtpCode(req, smtpCodeMethod)},
			outcome: outcomeUnsupported,
			reason:  fmt.Sprintf("method %s cannot be verified by a pass-through authenticator", req.Method),
		}
	}
	return h.decidePlain(ctx, req)
}

// decideRelay handles SMTP without authentication, which needs a policy,
// not a login check.
func (h *Handler) decideRelay(ctx context.Context, req Request) decision {
	if req.Protocol != imapcheck.SMTP {
		return decision{
			resp:    Response{Status: StatusMalformed},
			outcome: outcomeMalformed,
			reason:  "Auth-Method none for " + string(req.Protocol),
		}
	}
	if h.SMTPRelay == nil {
		return decision{
			resp:    Response{Status: StatusAuthRequired, ErrorCode: smtpCodeAuthRequired},
			outcome: outcomeRefused,
			reason:  "unauthenticated SMTP and IMAPGATE_SMTP_RELAY is unset",
		}
	}
	return h.answerOK(ctx, req, h.SMTPRelay, decision{outcome: outcomeOK, reason: "relay"})
}

// decidePlain verifies a cleartext login on the user's backend.
func (h *Handler) decidePlain(ctx context.Context, req Request) decision {
	if req.User == "" || req.Password == "" {
		return h.rejected(req, decision{reason: "empty user or password"}, 0)
	}
	// Limits and failure counts fold case like the selectors and
	// Dovecot do, so "Alice" and "alice" share one budget. One keyed
	// digest of user and password serves the limits, the cache and the
	// coalescing: the password itself is kept nowhere.
	limitUser := strings.ToLower(req.User)
	sum := h.fp.digest(limitUser, req.Password)
	fingerprint := binary.BigEndian.Uint64(sum[:8])
	if blocked, limit, why := h.limiter.begin(limitUser, req.ClientIP, fingerprint); blocked {
		h.Metrics.throttle(limit)
		// A throttled guesser gets the longest Auth-Wait.
		d := h.rejected(req, decision{reason: why}, maxAttemptsWithWait)
		d.outcome = outcomeThrottled
		return d
	}
	defer h.limiter.end(limitUser, req.ClientIP, fingerprint)
	route, err := h.Routes.Route(ctx, req.User)
	if err != nil {
		// A directory that cannot tell now: never a wrong password, and
		// never the next rule's backend.
		return h.temporary(req, decision{reason: "routing rule failed", err: err})
	}
	b := route.Backend
	if b == nil {
		// Answered exactly like a wrong password, so that nobody can learn
		// which users exist, and counted like one.
		return h.failed(req, limitUser, fingerprint, decision{reason: "no backend for user"})
	}
	d := decision{backend: b.Name}
	if _, ok := b.Proxy[req.Protocol]; !ok {
		d.reason = fmt.Sprintf("backend %s serves no %s", b.Name, req.Protocol)
		return h.temporary(req, d)
	}
	checkProto := h.checkProtocol(req.Protocol)
	ep, ok := b.Check[checkProto]
	if !ok {
		d.reason = fmt.Sprintf("backend %s has no %s address to verify with", b.Name, checkProto)
		return h.temporary(req, d)
	}
	if h.Health != nil && (!h.Health.Up(b.Name, req.Protocol) || !h.Health.Up(b.Name, checkProto)) {
		// Known down: answer now rather than after a timeout, and never
		// from the cache, since nginx could not reach the backend anyway.
		// The client retries after Auth-Wait; by then a fresh probe has
		// seen the backend back, if it is.
		h.Health.Recheck()
		d.reason = "backend down (last probe failed)"
		return h.temporary(req, d)
	}
	if err := imapcheck.Carries(checkProto, req.User, req.Password); err != nil {
		// Such a password cannot be typed through nginx's line-based
		// protocols either; it is the client's input, not the backend's
		// fault, so it is answered like a wrong password and counted.
		d.err = err
		d.reason = "credentials the check protocol cannot carry"
		return h.failed(req, limitUser, fingerprint, d)
	}
	// The entry is per (backend, protocol, user) and the digest covers
	// user and password, so a hit means this very password was accepted.
	key := cacheKey{backend: b.Name, protocol: string(checkProto), user: req.User}
	hit := h.cache.hit(key, sum)
	if h.cache != nil {
		h.Metrics.cacheLookup(hit)
	}
	if hit {
		d.outcome, d.cached = outcomeOK, true
		h.limiter.success(limitUser, req.ClientIP)
		return h.answerOK(ctx, req, b, d)
	}
	// Identical checks at the same moment (a client opening several
	// connections) share one backend login. The digest covers the
	// password, so only the very same credentials are shared.
	var ranHere bool
	res, _, shared := h.flight.Do(key.backend+"\x00"+key.protocol+"\x00"+key.user+"\x00"+string(sum[:]), func() (any, error) {
		ranHere = true
		release, err := h.slots.acquire(ctx, b.Name)
		if err != nil {
			return checkResult{imapcheck.Temporary, fmt.Errorf("waiting for one of the %d check slots of backend %s: %w", h.MaxChecks, b.Name, err)}, nil
		}
		defer release()
		done := h.Metrics.checkStarted(b.Name, string(checkProto))
		outcome, err := h.Verifier.Verify(ctx, imapcheck.Request{
			Protocol:   checkProto,
			Address:    ep.String(),
			ServerName: ep.Host,
			User:       req.User,
			Password:   req.Password,
			ClientIP:   req.ClientIP,
		})
		done(outcome.String())
		return checkResult{outcome, err}, nil
	})
	checked := res.(checkResult)
	// shared is true for every caller, the one that ran the check too.
	d.err, d.coalesced = checked.err, shared && !ranHere
	if d.coalesced {
		h.Metrics.coalescedCheck()
	}
	switch checked.outcome {
	case imapcheck.OK:
		d.outcome = outcomeOK
		h.cache.store(key, sum)
		h.limiter.success(limitUser, req.ClientIP)
		return h.answerOK(ctx, req, b, d)
	case imapcheck.Rejected:
		h.cache.forget(key)
		d.reason = "backend refused the credentials"
		return h.failed(req, limitUser, fingerprint, d)
	case imapcheck.Unsupported:
		// The backend offers no way to check this login (plaintext logins
		// disabled without TLS, or bytes the protocol cannot carry). That
		// is not the user's wrong password, so it is not reported as one.
		d.reason = "backend cannot verify this login"
		d.loud = true
		d = h.temporary(req, d)
		d.outcome = outcomeUnsupported
		return d
	}
	d.reason = "backend unavailable"
	if isCertificateError(checked.err) {
		d.reason = "backend certificate not trusted"
		d.loud = true
	}
	return h.temporary(req, d)
}

// checkResult is what one backend check returned, shared by the requests
// coalesced into it.
type checkResult struct {
	outcome imapcheck.Outcome
	err     error
}

// failed answers a wrong password and counts it against the limits.
func (h *Handler) failed(req Request, limitUser string, fingerprint uint64, d decision) decision {
	tried := h.limiter.failure(limitUser, req.ClientIP, fingerprint)
	return h.rejected(req, d, tried)
}

// checkProtocol is the protocol a login over proto is verified with.
func (h *Handler) checkProtocol(proto imapcheck.Protocol) imapcheck.Protocol {
	switch proto {
	case imapcheck.POP3:
		return imapcheck.POP3
	case imapcheck.SMTP:
		if h.SMTPVerify != "" {
			return h.SMTPVerify
		}
	}
	return imapcheck.IMAP
}

// answerOK sends nginx to b's address for the request's protocol. The host
// is resolved here because nginx accepts only a literal IP.
func (h *Handler) answerOK(ctx context.Context, req Request, b *backend.Backend, d decision) decision {
	d.backend = b.Name
	ep, ok := b.Proxy[req.Protocol]
	if !ok {
		d.reason = fmt.Sprintf("backend %s serves no %s", b.Name, req.Protocol)
		return h.temporary(req, d)
	}
	ip, err := h.Resolver.Resolve(ctx, ep.Host)
	if err != nil {
		d.err = err
		d.reason = "cannot resolve backend address"
		return h.temporary(req, d)
	}
	d.resp = Response{Status: StatusOK, Server: ip, Port: ep.Port}
	return d
}

// rejected answers a refused login. The Auth-Wait grows with the
// session's attempts, or with the distinct wrong passwords this network
// has tried for the user, whichever is more.
func (h *Handler) rejected(req Request, d decision, tried int) decision {
	d.outcome = outcomeRejected
	d.resp = Response{Status: StatusInvalid, Wait: rejectedWait(req.Attempt, tried), ErrorCode: smtpCode(req, smtpCodeInvalid)}
	return d
}

func (h *Handler) temporary(req Request, d decision) decision {
	d.outcome = outcomeTemporary
	d.resp = Response{Status: StatusTemporary, Wait: temporaryWait(req.Attempt), ErrorCode: smtpCode(req, smtpCodeTemporary)}
	return d
}

// smtpCode returns code for SMTP requests; nginx ignores Auth-Error-Code
// for the other protocols, so it is not sent there.
func smtpCode(req Request, code string) string {
	if req.Protocol == imapcheck.SMTP {
		return code
	}
	return ""
}

// isCertificateError reports whether err is a failed certificate check,
// which an operator must hear about loudly: it is either a misconfigured
// CA or someone in the middle.
func isCertificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

// log writes the one line per login attempt. It never includes the
// password; the backend's reply and network errors come from the
// verifier, which keeps them free of it.
func (h *Handler) log(req Request, d decision, elapsed time.Duration) {
	level := slog.LevelInfo
	switch {
	case d.loud:
		level = slog.LevelError
	case d.outcome != outcomeOK && d.outcome != outcomeRejected:
		level = slog.LevelWarn
	}
	// client comes first: it is nginx's, not the user's, so a log
	// parser (fail2ban) anchored on it cannot be fooled by a user name
	// that contains "client=…".
	attrs := []slog.Attr{
		slog.String("client", clientString(req.ClientIP)),
		slog.String("user", req.User),
		slog.String("protocol", string(req.Protocol)),
		slog.String("method", string(req.Method)),
		slog.Int("attempt", req.Attempt),
		slog.String("backend", d.backend),
		slog.String("outcome", d.outcome),
		slog.Duration("duration", elapsed),
		slog.Bool("cached", d.cached),
		slog.Bool("coalesced", d.coalesced),
		// Always there, empty for a plain success, so the line's fields
		// are the same for every attempt.
		slog.String("reason", d.reason),
	}
	if d.err != nil {
		attrs = append(attrs, slog.String("reply", d.err.Error()))
	}
	h.logger().LogAttrs(context.Background(), level, "login", attrs...)
}

func clientString(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}
