package auth

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/imapcheck"
)

// Outcome is what became of one auth_http request. Its String is the
// outcome in the log line and the metrics.
type Outcome uint8

// The outcomes.
const (
	// OutcomeOK: the backend accepted the login (or the cache knew it did,
	// or unauthenticated SMTP went to the relay).
	OutcomeOK Outcome = iota + 1
	// OutcomeRejected: a wrong password, or no backend for the user.
	OutcomeRejected
	// OutcomeThrottled: refused by the guessing limits without asking
	// the backend.
	OutcomeThrottled
	// OutcomeTemporary: the backend (or the way to it) could not decide.
	OutcomeTemporary
	// OutcomeUnsupported: a method imapgate cannot verify, or a backend
	// that offers no way to verify the login.
	OutcomeUnsupported
	// OutcomeRefused: unauthenticated SMTP without a relay.
	OutcomeRefused
	// OutcomeMalformed: a request nginx would never send.
	OutcomeMalformed
	// OutcomeForbidden: a request from outside IMAPGATE_ALLOW_FROM or
	// without the shared secret.
	OutcomeForbidden
	// OutcomeDelayed: the backend greeted and took the login, then held
	// its answer past the deadline (its auth penalty on this client, a
	// tarpit). Answered like OutcomeTemporary, but an attempt, not an
	// outage: the limits count it like a wrong password.
	OutcomeDelayed
	// OutcomeHeld: the operator holds the user (IMAPGATE admin hold):
	// nginx is told to wait and ask again, and the client waits.
	OutcomeHeld
)

var outcomeNames = [...]string{
	OutcomeOK:          "ok",
	OutcomeRejected:    "rejected",
	OutcomeThrottled:   "throttled",
	OutcomeTemporary:   "temporary",
	OutcomeUnsupported: "unsupported",
	OutcomeRefused:     "refused",
	OutcomeMalformed:   "malformed",
	OutcomeForbidden:   "forbidden",
	OutcomeDelayed:     "delayed",
	OutcomeHeld:        "held",
}

// String returns the outcome's name as the log and the metrics write it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "undecided"
}

// Reason says why a verdict was reached. It goes to the log only; the
// client sees a fixed text that tells it nothing about why.
type Reason string

// The reasons.
const (
	ReasonNone               Reason = ""
	ReasonEmptyCredentials   Reason = "empty user or password"
	ReasonNoBackend          Reason = "no backend for user"
	ReasonRoutingFailed      Reason = "routing rule cannot tell now"
	ReasonNotServed          Reason = "backend does not serve the protocol"
	ReasonNoCheckAddress     Reason = "backend has no address to verify with"
	ReasonBackendDown        Reason = "backend down (last probe failed)"
	ReasonBackendDegraded    Reason = "backend degraded (greets, but logins stall)"
	ReasonOversized          Reason = "backend sent more than a check reads"
	ReasonStalled            Reason = "backend stopped answering"
	ReasonUncarriable        Reason = "credentials the check protocol cannot carry"
	ReasonBackendRefused     Reason = "backend refused the credentials"
	ReasonCannotVerify       Reason = "backend cannot verify this login"
	ReasonUnavailable        Reason = "backend unavailable"
	ReasonUntrustedCert      Reason = "backend certificate not trusted"
	ReasonNoCheckSlot        Reason = "no check slot of the backend came free in time"
	ReasonUnresolvable       Reason = "cannot resolve backend address"
	ReasonMethod             Reason = "method cannot be verified by a pass-through authenticator"
	ReasonRelay              Reason = "relay"
	ReasonNoRelay            Reason = "unauthenticated SMTP and IMAPGATE_SMTP_RELAY is unset"
	ReasonMethodNone         Reason = "Auth-Method none for a protocol other than SMTP"
	ReasonMalformedRequest   Reason = "malformed request"
	ReasonPeerNotAllowed     Reason = "peer not in IMAPGATE_ALLOW_FROM"
	ReasonSecretMissing      Reason = "missing or wrong " + secretHeader
	ReasonTooManyForPair     Reason = "too many wrong passwords for this user from this network"
	ReasonTooManyForUser     Reason = "too many wrong passwords for this user"
	ReasonTooManyFromNetwork Reason = "too many wrong passwords from this network"
	ReasonDelayed            Reason = "backend held the answer past the deadline (its auth penalty on this client, or a tarpit)"
	ReasonDrained            Reason = "backend drained by the operator"
	ReasonHeld               Reason = "user held by the operator"
)

// loud reports whether the reason is the operator's to fix (a
// misconfigured CA or someone in the middle, a backend that cannot verify
// logins): such verdicts are logged as errors.
func (r Reason) loud() bool {
	return r == ReasonUntrustedCert || r == ReasonCannotVerify
}

// Verdict is the decision on one request, and everything that is said
// about it: nginx's answer, the SMTP code, Auth-Wait, the metrics and the
// log line are all derived from it, here.
type Verdict struct {
	Outcome Outcome
	Reason  Reason
	// Cause is the backend's reply or the error behind Reason, for the
	// log; the verifier keeps the password out of it.
	Cause error
	// Backend and Rule name the user's backend and the routing rule that
	// named it, when known; Stale names the directory whose expired answer
	// was used because it could not be asked.
	Backend, Rule, Stale string
	// Server and Port are where nginx goes, with OutcomeOK.
	Server netip.Addr
	Port   uint16
	// Tried is, for a refused password, how many distinct wrong
	// passwords this network has tried for the user (Auth-Wait grows
	// with it).
	Tried int
	// Held is how long the backend took to refuse the password: time the
	// client has waited already, which Auth-Wait need not add again.
	Held time.Duration
	// Limit is the limit that throttled a login: pair, user or network.
	Limit string
	// Cached says the answer came from the verified-login cache;
	// Coalesced that it came from a check another request made at the
	// same moment.
	Cached, Coalesced bool
	// Drained names the backend the operator drained, whose login went to
	// Backend instead.
	Drained string
	// Wait is, for a held user, how long nginx waits before it asks again
	// (seconds, at least 1).
	Wait int
}

// The Auth-Status texts imapgate sends. nginx shows them to the mail
// client verbatim (IMAP "NO <text>", POP3 "-ERR <text>", SMTP
// "<Auth-Error-Code> <text>"), so they are fixed and reveal nothing about
// why a login failed: the reason goes to imapgate's log only. A failure
// is sent with its response code in front for IMAP and POP3 (see
// Failure.Status).
const (
	StatusOK           = "OK"
	StatusInvalid      = "Invalid login or password"
	StatusTemporary    = "Temporary server problem, try again later"
	StatusThrottled    = "Too many failed logins, try again later"
	StatusMethod       = "Authentication method not supported, use a cleartext login (LOGIN or PLAIN)"
	StatusAuthRequired = "Authentication required"
	// StatusWait makes nginx wait Auth-Wait seconds and ask again, without
	// counting an attempt or telling the client anything (nginx's
	// undocumented WAIT, since 0.5.0).
	StatusWait = "WAIT"
	// StatusMalformed answers a request nginx would never send; it reads
	// like a failed login so that it tells a prober nothing.
	StatusMalformed = StatusInvalid
)

// SMTPCode is an SMTP reply code and enhanced status code (RFC 5321,
// RFC 3463), sent in Auth-Error-Code in front of an SMTP client's error.
type SMTPCode string

// The SMTP codes imapgate sends (RFC 4954 section 6).
const (
	SMTPInvalid      SMTPCode = "535 5.7.8"
	SMTPTemporary    SMTPCode = "451 4.3.0"
	SMTPThrottled    SMTPCode = "454 4.7.0"
	SMTPMethod       SMTPCode = "504 5.5.4"
	SMTPAuthRequired SMTPCode = "530 5.7.0"
)

// Failure is a failed login as the mail client is told it: a text, and
// the response code that tells the client what to do about it, in its
// protocol's terms. A client told AUTHENTICATIONFAILED may ask its user
// for a new password; one told UNAVAILABLE keeps the saved one and tries
// again later, which is what a throttled or a temporary failure needs.
type Failure struct {
	// Text is the human-readable part.
	Text string
	// IMAPCode is the IMAP response code (RFC 5530), POP3Code the POP3
	// one (RFC 2449 section 8, RFC 3206); empty sends none.
	IMAPCode, POP3Code string
	// SMTP is sent in Auth-Error-Code (RFC 4954 section 6).
	SMTP SMTPCode
}

// The failures imapgate answers with.
var (
	FailInvalid      = Failure{Text: StatusInvalid, IMAPCode: "AUTHENTICATIONFAILED", POP3Code: "AUTH", SMTP: SMTPInvalid}
	FailTemporary    = Failure{Text: StatusTemporary, IMAPCode: "UNAVAILABLE", POP3Code: "SYS/TEMP", SMTP: SMTPTemporary}
	FailThrottled    = Failure{Text: StatusThrottled, IMAPCode: "UNAVAILABLE", POP3Code: "SYS/TEMP", SMTP: SMTPThrottled}
	FailMethod       = Failure{Text: StatusMethod, SMTP: SMTPMethod}
	FailAuthRequired = Failure{Text: StatusAuthRequired, SMTP: SMTPAuthRequired}
)

// Status is the Auth-Status for a client of proto: the text, with the
// protocol's response code in front. nginx puts Auth-Status after "NO "
// (IMAP) or "-ERR " (POP3) as it is, so a leading "[CODE] " reaches the
// client as a real response code; SMTP's code goes in Auth-Error-Code.
func (f Failure) Status(proto imapcheck.Protocol) string {
	code := ""
	switch proto {
	case imapcheck.IMAP:
		code = f.IMAPCode
	case imapcheck.POP3:
		code = f.POP3Code
	}
	if code == "" {
		return f.Text
	}
	return "[" + code + "] " + f.Text
}

// Header names of the protocol.
const (
	secretHeader        = "X-Imapgate-Secret"
	headerAuthStatus    = "Auth-Status"
	headerAuthServer    = "Auth-Server"
	headerAuthPort      = "Auth-Port"
	headerAuthWait      = "Auth-Wait"
	headerAuthErrorCode = "Auth-Error-Code"
)

// Auth-Wait policy.
const (
	// maxAttemptsWithWait is the session attempt from which no Auth-Wait
	// is sent, so that nginx closes the session (nginx has no cap of its
	// own and keeps each session's memory until it ends).
	maxAttemptsWithWait  = 10
	temporaryWaitSeconds = 3
	rejectedWaitPerTry   = 2
	maxRejectedWait      = 10
)

// answer is what nginx is told: Auth-Status and the fields that go
// with it.
type answer struct {
	code   int // HTTP status, for people using curl; nginx ignores it
	status string
	server netip.Addr
	port   uint16
	wait   int
	smtp   SMTPCode
}

// answer derives nginx's answer to req from v.
func (v Verdict) answer(req Request) answer {
	var f Failure
	switch {
	case v.Outcome == OutcomeOK:
		return answer{code: http.StatusOK, status: StatusOK, server: v.Server, port: v.Port}
	case v.Outcome == OutcomeForbidden:
		return answer{code: http.StatusForbidden}
	case v.Outcome == OutcomeHeld:
		// Never without Auth-Wait: nginx would ask again at once, forever.
		return answer{code: http.StatusOK, status: StatusWait, wait: max(v.Wait, 1)}
	case v.Outcome == OutcomeMalformed, v.Outcome == 0:
		// The protocol is not known, so no code goes with the text.
		return answer{code: http.StatusBadRequest, status: StatusMalformed}
	case v.Outcome == OutcomeRejected:
		f = FailInvalid
	case v.Outcome == OutcomeThrottled:
		// The password was not checked, so it is not called wrong: the
		// client keeps it and tries again later.
		f = FailThrottled
	case v.Outcome == OutcomeUnsupported && v.Reason == ReasonMethod:
		f = FailMethod
	case v.Outcome == OutcomeRefused:
		f = FailAuthRequired
	default: // OutcomeTemporary, OutcomeDelayed, OutcomeUnsupported
		// A backend that cannot verify the login, or held its answer, is
		// not the user's wrong password, so it is not reported as one.
		f = FailTemporary
	}
	a := answer{code: http.StatusOK, status: f.Status(req.Protocol)}
	switch f {
	case FailInvalid:
		a.wait = rejectedWait(req.Attempt, v.Tried, v.Held)
	case FailThrottled:
		// No Auth-Wait: nginx closes the session at once. Nothing tried in
		// it could pass before the window ends, and a session held open
		// costs nginx memory; a guesser who reconnects costs one answer
		// that asks no backend.
	case FailTemporary:
		a.wait = temporaryWait(req.Attempt)
	}
	if req.Protocol == imapcheck.SMTP {
		// nginx ignores Auth-Error-Code for the other protocols.
		a.smtp = f.SMTP
	}
	return a
}

// write adds a's header fields to w. nginx reads only header fields, and
// only up to 1024 bytes with the status line.
func (a answer) write(w *http1.ResponseWriter) {
	w.WriteHeader(a.code)
	if a.status == "" {
		return
	}
	w.Add(headerAuthStatus, a.status)
	if a.status == StatusOK {
		// nginx wants a bare IP: IPv6 without brackets, no zone.
		w.Add(headerAuthServer, a.server.WithZone("").String())
		w.Add(headerAuthPort, strconv.Itoa(int(a.port)))
		return
	}
	if a.wait > 0 {
		w.Add(headerAuthWait, strconv.Itoa(a.wait))
	}
	if a.smtp != "" {
		w.Add(headerAuthErrorCode, string(a.smtp))
	}
}

// rejectedWait is the Auth-Wait after a refused password: it grows with
// each attempt in the session, or with the distinct wrong passwords the
// network has tried for the user, whichever is more, which slows a
// guesser without tying up a mail server process; less the time the
// backend held the answer (Dovecot's penalty on a guesser already slows
// it, and a user who mistyped need not wait twice), but at least a second
// so that the session goes on; and it stops once the client has had
// maxAttemptsWithWait tries, so that nginx closes the session.
func rejectedWait(attempt, tried int, held time.Duration) int {
	if attempt >= maxAttemptsWithWait {
		return 0
	}
	wait := min(max(attempt, tried)*rejectedWaitPerTry, maxRejectedWait)
	return max(wait-int(held/time.Second), 1)
}

// temporaryWait is the Auth-Wait after a backend problem: a short pause,
// then the client may retry in the same session.
func temporaryWait(attempt int) int {
	if attempt >= maxAttemptsWithWait {
		return 0
	}
	return temporaryWaitSeconds
}

// level is the log level of v's line: errors for what the operator must
// fix, warnings for what is neither a success nor a wrong password.
func (v Verdict) level() slog.Level {
	switch {
	case v.Reason.loud():
		return slog.LevelError
	case v.Outcome != OutcomeOK && v.Outcome != OutcomeRejected && v.Outcome != OutcomeDelayed && v.Outcome != OutcomeHeld:
		// A delayed check is a client's attempt, like a wrong password; a
		// held one is the operator's doing.
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// log writes the one line per login attempt. It never includes the
// password; the backend's reply and network errors come from the
// verifier, which keeps them free of it.
func (v Verdict) log(logger *slog.Logger, req Request, elapsed time.Duration) {
	ctx, level := context.Background(), v.level()
	if !logger.Enabled(ctx, level) {
		return
	}
	// The record is made here, not by logger.LogAttrs, which also asks
	// the runtime for the caller's frame (a source the program's handler
	// never prints), and its fields are added to it directly rather than
	// through a slice that would live on the heap: one line per login,
	// at thousands a second, is worth it.
	r := slog.NewRecord(time.Now(), level, "login", 0)
	// client comes first: it is nginx's, not the user's, so a log
	// parser (fail2ban) anchored on it cannot be fooled by a user name
	// that contains "client=…".
	r.AddAttrs(
		slog.String("client", clientString(req.ClientIP)),
		slog.String("user", req.User),
		slog.String("protocol", string(req.Protocol)),
		slog.String("method", string(req.Method)),
		slog.Int("attempt", req.Attempt),
		slog.String("backend", v.Backend),
		slog.String("rule", v.Rule),
		slog.String("stale", v.Stale),
		slog.String("outcome", v.Outcome.String()),
		slog.Duration("duration", elapsed),
		slog.Bool("cached", v.Cached),
		slog.Bool("coalesced", v.Coalesced),
		// Always there, empty for a plain success, so the line's fields
		// are the same for every attempt.
		slog.String("reason", string(v.Reason)),
	)
	if v.Drained != "" {
		r.AddAttrs(slog.String("drained", v.Drained))
	}
	if v.Cause != nil {
		r.AddAttrs(slog.String("reply", v.Cause.Error()))
	}
	logger.Handler().Handle(ctx, r)
}

// logRefusal writes the line for a request refused before it was read
// as a login (forbidden, malformed): there is no user to name.
func (v Verdict) logRefusal(logger *slog.Logger, remote string) {
	attrs := []slog.Attr{
		slog.String("outcome", v.Outcome.String()),
		slog.String("reason", string(v.Reason)),
		slog.String("remote", remote),
	}
	if v.Cause != nil {
		attrs = append(attrs, slog.String("reply", v.Cause.Error()))
	}
	logger.LogAttrs(context.Background(), slog.LevelWarn, "login", attrs...)
}

func clientString(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}
