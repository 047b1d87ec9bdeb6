package auth

import (
	"net/http"
	"net/netip"
	"strconv"
)

// The Auth-Status texts imapgate sends. nginx shows them to the mail
// client verbatim (IMAP "NO <text>", POP3 "-ERR <text>", SMTP
// "<Auth-Error-Code> <text>"), so they are fixed and reveal nothing about
// why a login failed: the reason goes to imapgate's log only.
const (
	StatusOK           = "OK"
	StatusInvalid      = "Invalid login or password"
	StatusTemporary    = "Temporary server problem, try again later"
	StatusMethod       = "Authentication method not supported, use a cleartext login (LOGIN or PLAIN)"
	StatusAuthRequired = "Authentication required"
	// StatusMalformed answers a request nginx would never send; it reads
	// like a failed login so that it tells a prober nothing.
	StatusMalformed = StatusInvalid
)

// The SMTP reply codes sent in Auth-Error-Code (RFC 5321, RFC 3463, RFC
// 4954 section 6).
const (
	smtpCodeInvalid      = "535 5.7.8"
	smtpCodeTemporary    = "451 4.3.0"
	smtpCodeMethod       = "504 5.5.4"
	smtpCodeAuthRequired = "530 5.7.0"
)

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
	// is sent, so that nginx closes the session.
	maxAttemptsWithWait  = 10
	temporaryWaitSeconds = 3
	rejectedWaitPerTry   = 2
	maxRejectedWait      = 10
)

// Response is imapgate's answer to nginx.
type Response struct {
	// Status is "OK" or the error text shown to the client.
	Status string
	// Server and Port are the backend nginx connects to; only with OK.
	Server netip.Addr
	Port   uint16
	// Wait, when positive, makes nginx delay the error by that many
	// seconds and then let the client try again in the same session.
	Wait int
	// ErrorCode replaces nginx's default "535 5.7.0" before an SMTP
	// client's error line.
	ErrorCode string
}

// Write sends the response as headers. nginx ignores the status code and
// reads only headers, which must fit in 1024 bytes with the status line.
// The status code still says what happened, for people using curl.
func (r Response) Write(w http.ResponseWriter, code int) {
	h := w.Header()
	r.eachHeader(func(name, value string) { h[name] = []string{value} })
	w.WriteHeader(code)
}

// eachHeader calls add for each header field of the answer, in the
// order they are written.
func (r Response) eachHeader(add func(name, value string)) {
	add(headerAuthStatus, r.Status)
	if r.Status == StatusOK {
		// nginx wants a bare IP: IPv6 without brackets, no zone.
		add(headerAuthServer, r.Server.WithZone("").String())
		add(headerAuthPort, strconv.Itoa(int(r.Port)))
	}
	if r.Wait > 0 && r.Status != StatusOK {
		add(headerAuthWait, strconv.Itoa(r.Wait))
	}
	if r.ErrorCode != "" {
		add(headerAuthErrorCode, r.ErrorCode)
	}
}

// rejectedWait is the Auth-Wait after a refused password: it grows with
// each attempt in the session, which slows a guesser without tying up a
// mail server process, and it stops once the client has had
// maxAttemptsWithWait tries, so that nginx closes the session (nginx has no
// cap of its own and keeps each session's memory until it ends).
func rejectedWait(attempt, tried int) int {
	if attempt >= maxAttemptsWithWait {
		return 0
	}
	return min(max(attempt, tried)*rejectedWaitPerTry, maxRejectedWait)
}

// temporaryWait is the Auth-Wait after a backend problem: a short pause,
// then the client may retry in the same session.
func temporaryWait(attempt int) int {
	if attempt >= maxAttemptsWithWait {
		return 0
	}
	return temporaryWaitSeconds
}
