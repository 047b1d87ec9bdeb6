package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/auth/state"
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

// Health tells whether a check on a backend may run, and learns from the
// checks that do; *backend.Health is the real one.
type Health interface {
	// Admit says whether a check on backend, connecting to check, may run
	// for a login over protos; trial says it runs although the backend
	// is marked down or degraded (the caller then calls EndTrial), and
	// degraded why it may not.
	Admit(ctx context.Context, backend string, check backend.Endpoint, protos ...imapcheck.Protocol) (ok, trial, degraded bool)
	// EndTrial ends a trial Admit allowed.
	EndTrial(backend string)
	// Observe learns from a check's result.
	Observe(backend string, check backend.Endpoint, client netip.Addr, outcome imapcheck.Outcome, err error)
	// Recheck asks for a probe soon, without waiting for it.
	Recheck()
}

// Handler answers nginx's auth_http requests on any path; it is the
// http1.Handler of imapgate's auth listener. Its fields are set once
// before it serves.
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
	// CacheSize bounds the cache's entries; 0 means DefaultCacheSize.
	CacheSize int
	// Limits bounds password guessing; nil means no limits.
	Limits *Limits
	// State keeps the guessing counts for Limits (a store shared by
	// several imapgates); nil means a state.Memory of the handler's own.
	State state.Store
	// MaxChecks bounds the checks in flight on each backend; more wait
	// for a slot, until their deadline. 0 means no bound.
	MaxChecks int
	// MaxChecksPerNetwork bounds the checks in flight on each backend for
	// clients of one network (state.NetworkOf), so that one network's
	// guesses, however slowly the backend answers them, leave the other
	// slots to everyone else. Trusted networks are not bound. 0 means no
	// bound but MaxChecks.
	MaxChecksPerNetwork int
	// Metrics, when set, records what the handler does.
	Metrics *Metrics
	// Health, when set, says which backends answer their probes; a login
	// for a backend known to be down or degraded fails fast as temporary,
	// but for one trial at a time, bounded by TrialTimeout.
	Health Health
	// TrialTimeout bounds a trial check on a backend marked down or
	// degraded; 0 means only Timeout does.
	TrialTimeout time.Duration
	// AllowFrom, when not empty, lists the networks requests may come
	// from (nginx's addresses); others get HTTP 403.
	AllowFrom []netip.Prefix
	// Controls, when set, holds the operator's drains and holds
	// (operator.go); nil means none.
	Controls state.Controls
	// Backends are the backends by name, where a drain's alternate is
	// found.
	Backends map[string]*backend.Backend

	once    sync.Once
	fp      *state.Digester
	cache   *loginCache
	limiter *limiter
	slots   *checkSlots
	flight  singleflight.Group
	sources sourceWatch
}

// DefaultCacheSize is the most verified logins remembered when
// CacheSize is zero.
const DefaultCacheSize = 100_000

// init builds the handler's state from its settings, once.
func (h *Handler) init() {
	h.fp = state.NewDigester(nil)
	size := h.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	h.cache = newLoginCache(h.CacheTTL, size)
	if h.Limits != nil {
		store := h.State
		if store == nil {
			store = state.NewMemory(h.Limits.Limits)
		}
		h.limiter = &limiter{store: store, trusted: h.Limits.Trusted}
	}
	h.slots = newCheckSlots(h.MaxChecks, h.MaxChecksPerNetwork)
}

// Serve answers one auth_http request. It always answers with an
// Auth-Status (or 403 for a request from a peer not allowed, or without
// the shared secret), since anything else makes nginx show the client
// "internal server error". The log line is written after the answer has
// left, so that nginx does not wait for it.
func (h *Handler) Serve(ctx context.Context, w *http1.ResponseWriter, r *http1.Request) {
	start := time.Now()
	h.once.Do(h.init)
	if v, refused := h.admit(r); refused {
		v.answer(Request{}).write(w)
		h.Metrics.request("", v)
		w.Send()
		v.logRefusal(h.logger(), r.RemoteAddr.String())
		return
	}
	req, err := parseRequest(r.Header)
	if err != nil {
		h.refuseMalformed(w, r.RemoteAddr, err)
		return
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	v := h.decide(ctx, req)
	v.answer(req).write(w)
	// Counted before the answer leaves, so that a scrape right after it
	// sees it; the log line waits until nginx has its answer.
	h.Metrics.request(string(req.Protocol), v)
	w.Send()
	h.watchSources(req)
	v.log(h.logger(), req, time.Since(start))
}

// ServeMalformed answers a request head the HTTP server could not read,
// like any request nginx would never send: nginx shows its text.
func (h *Handler) ServeMalformed(w *http1.ResponseWriter, remote net.Addr, err error) {
	code := w.Code()
	h.refuseMalformed(w, remote, err)
	w.WriteHeader(code) // 431 stays 431
}

// refuseMalformed answers, counts and logs a malformed request.
func (h *Handler) refuseMalformed(w *http1.ResponseWriter, remote net.Addr, err error) {
	v := Verdict{Outcome: OutcomeMalformed, Reason: ReasonMalformedRequest, Cause: err}
	v.answer(Request{}).write(w)
	h.Metrics.request("", v)
	v.logRefusal(h.logger(), remote.String())
}

// admit refuses a request from a peer outside AllowFrom or without the
// shared secret, before anything in it is read as a login.
func (h *Handler) admit(r *http1.Request) (Verdict, bool) {
	if !h.peerAllowed(r.RemoteAddr) {
		return Verdict{Outcome: OutcomeForbidden, Reason: ReasonPeerNotAllowed}, true
	}
	if !h.secretOK(r.Header) {
		return Verdict{Outcome: OutcomeForbidden, Reason: ReasonSecretMissing}, true
	}
	return Verdict{}, false
}

// peerAllowed reports whether the request's peer is in AllowFrom.
func (h *Handler) peerAllowed(remote net.Addr) bool {
	return len(h.AllowFrom) == 0 || PeerIn(h.AllowFrom, remote)
}

// PeerIn reports whether remote's address is in one of nets. The server
// asks it at accept, before a byte is read; the handler asks it again of
// every request, for servers that cannot. A unix socket's peers are who
// its file permissions let in, so they are always in.
func PeerIn(nets []netip.Prefix, remote net.Addr) bool {
	if remote.Network() == "unix" {
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
	for _, p := range nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// secretOK reports whether the request carries the shared secret. Both
// sides are hashed first so the comparison takes the same time whatever
// the length of the guess.
func (h *Handler) secretOK(header http1.Header) bool {
	if h.SharedSecret == "" {
		return true
	}
	secret, _ := header.Get(secretHeader)
	got := sha256.Sum256([]byte(secret))
	want := sha256.Sum256([]byte(h.SharedSecret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}
