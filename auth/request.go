// Package auth implements nginx's mail auth_http protocol: it reads the
// question nginx asks for every IMAP, POP3 and SMTP login, decides it by
// selecting the user's backend and verifying the password there, and writes
// the answer nginx understands.
//
// See http://nginx.org/en/docs/mail/ngx_mail_auth_http_module.html#protocol.
// The HTTP side is package http1; this package knows what nginx asks and
// what it must be told.
package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/imapgate/imapgate/auth/http1"

	"github.com/imapgate/imapgate/imapcheck"
)

// Method is the authentication method nginx reports in Auth-Method.
type Method string

// The methods nginx sends.
const (
	// MethodPlain covers every cleartext login: IMAP LOGIN and
	// AUTHENTICATE PLAIN/LOGIN, POP3 USER/PASS and AUTH PLAIN/LOGIN,
	// SMTP AUTH PLAIN/LOGIN.
	MethodPlain Method = "plain"
	// MethodAPOP is POP3 APOP: Auth-Pass holds a digest, not a password.
	MethodAPOP Method = "apop"
	// MethodCRAMMD5 is CRAM-MD5: Auth-Pass holds a digest, not a password.
	MethodCRAMMD5 Method = "cram-md5"
	// MethodExternal is a TLS client certificate login.
	MethodExternal Method = "external"
	// MethodNone is SMTP without authentication (smtp_auth none); nginx
	// asks at the first RCPT TO.
	MethodNone Method = "none"
)

// Limits on what a request may carry. nginx itself never sends more
// (its mail buffers are a few KiB); anything longer is not from nginx.
const (
	maxUserBytes     = 512
	maxPasswordBytes = 2048
)

// Request is one question from nginx: may this client log in, and where to.
type Request struct {
	Method Method
	// User and Password are decoded from nginx's %XX escaping.
	User     string
	Password string
	Protocol imapcheck.Protocol
	// Attempt is Auth-Login-Attempt: 1 for the first login of a client
	// session, counting up while nginx lets the client retry.
	Attempt int
	// ClientIP is the mail client's address; the zero Addr when nginx
	// did not send one.
	ClientIP netip.Addr
}

// ErrMalformed is wrapped by every error parseRequest returns.
var ErrMalformed = errors.New("malformed auth_http request")

// RequestFields are the header fields an auth_http request is answered
// from: the only ones the HTTP server needs to keep.
var RequestFields = []string{
	"Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol", "Auth-Login-Attempt",
	"Client-IP", secretHeader,
}

// parseRequest reads nginx's request header fields. It refuses anything
// nginx would never send (a missing or repeated field, a bad escape, an
// unknown method or protocol) so that odd input is answered, never
// guessed at. Error texts never contain the password.
func parseRequest(h http1.Header) (Request, error) {
	req := Request{Attempt: 1}
	for _, field := range []struct {
		name     string
		required bool
		parse    func(req *Request, value string) error
	}{
		{"Auth-Method", true, parseMethod},
		{"Auth-Protocol", true, parseProtocol},
		{"Auth-User", false, parseUser},
		{"Auth-Pass", false, parsePassword},
		{"Auth-Login-Attempt", false, parseAttempt},
		{"Client-IP", false, parseClientIP},
	} {
		value, err := single(h, field.name, field.required)
		if err != nil {
			return req, err
		}
		if err := field.parse(&req, value); err != nil {
			return req, err
		}
	}
	return req, nil
}

func parseMethod(req *Request, method string) error {
	req.Method = Method(strings.ToLower(method))
	switch req.Method {
	case MethodPlain, MethodAPOP, MethodCRAMMD5, MethodExternal, MethodNone:
		return nil
	}
	return malformed("unknown Auth-Method %q", truncate(method))
}

func parseProtocol(req *Request, proto string) error {
	req.Protocol = imapcheck.Protocol(strings.ToLower(proto))
	switch req.Protocol {
	case imapcheck.IMAP, imapcheck.POP3, imapcheck.SMTP:
		return nil
	}
	return malformed("unknown Auth-Protocol %q", truncate(proto))
}

func parseUser(req *Request, user string) error {
	var err error
	if req.User, err = Unescape(user); err != nil {
		return malformed("Auth-User: %v", err)
	}
	if len(req.User) > maxUserBytes {
		return malformed("Auth-User longer than %d bytes", maxUserBytes)
	}
	return nil
}

func parsePassword(req *Request, pass string) error {
	var err error
	// The escape error names only the position, never the password.
	if req.Password, err = Unescape(pass); err != nil {
		return malformed("Auth-Pass: %v", err)
	}
	if len(req.Password) > maxPasswordBytes {
		return malformed("Auth-Pass longer than %d bytes", maxPasswordBytes)
	}
	return nil
}

// parseAttempt reads Auth-Login-Attempt; absent means the first.
func parseAttempt(req *Request, attempt string) error {
	if attempt == "" {
		return nil
	}
	n, err := strconv.Atoi(attempt)
	if err != nil || n < 1 {
		return malformed("bad Auth-Login-Attempt %q", truncate(attempt))
	}
	req.Attempt = n
	return nil
}

// parseClientIP reads Client-IP; absent leaves the zero address.
func parseClientIP(req *Request, ip string) error {
	if ip == "" {
		return nil
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return malformed("bad Client-IP %q", truncate(ip))
	}
	req.ClientIP = addr.Unmap()
	return nil
}

// single returns the one value of header name. nginx sends each header at
// most once; two values mean the request did not come from nginx (or was
// tampered with), so it is refused rather than resolved either way.
func single(h http1.Header, name string, required bool) (string, error) {
	value, n := h.Get(name)
	switch {
	case n > 1:
		return "", malformed("%s sent %d times", name, n)
	case n == 0 && required:
		return "", malformed("missing %s", name)
	}
	return value, nil
}

// Unescape decodes nginx's escaping of Auth-User and Auth-Pass: nginx
// escapes only control bytes, space and '%' as %XX and sends every other
// byte raw, so only %XX is decoded. A '+' stays a '+' (form decoding would
// turn it into a space and break such passwords). The error never quotes s.
func Unescape(s string) (string, error) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape at byte %d", i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad escape at byte %d", i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// truncate shortens a header value quoted in an error so that a hostile
// request cannot flood the log.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}
