// Package auth implements nginx's mail auth_http protocol: it reads the
// question nginx asks for every IMAP, POP3 and SMTP login, decides it by
// selecting the user's backend and verifying the password there, and writes
// the answer nginx understands.
//
// See http://nginx.org/en/docs/mail/ngx_mail_auth_http_module.html#protocol
// and ../shared/auth_http.md in the design notes.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

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

// ErrMalformed is wrapped by every error ParseRequest returns.
var ErrMalformed = errors.New("malformed auth_http request")

// fields is read access to a request's header fields: the first value of
// the field with the canonical name, and how many times it was sent.
type fields interface {
	field(name string) (value string, n int)
}

// httpFields are the fields of a request net/http parsed.
type httpFields http.Header

func (h httpFields) field(name string) (string, int) {
	values := http.Header(h).Values(name)
	if len(values) == 0 {
		return "", 0
	}
	return values[0], len(values)
}

// ParseRequest reads nginx's request headers. It refuses anything nginx
// would never send (a missing or repeated header, a bad escape, an unknown
// method or protocol) so that odd input is answered, never guessed at.
// Error texts never contain the password.
func ParseRequest(h http.Header) (Request, error) {
	return parseRequest(httpFields(h))
}

func parseRequest(h fields) (Request, error) {
	var req Request

	method, err := single(h, "Auth-Method", true)
	if err != nil {
		return req, err
	}
	req.Method = Method(strings.ToLower(method))
	switch req.Method {
	case MethodPlain, MethodAPOP, MethodCRAMMD5, MethodExternal, MethodNone:
	default:
		return req, malformed("unknown Auth-Method %q", truncate(method))
	}

	proto, err := single(h, "Auth-Protocol", true)
	if err != nil {
		return req, err
	}
	req.Protocol = imapcheck.Protocol(strings.ToLower(proto))
	switch req.Protocol {
	case imapcheck.IMAP, imapcheck.POP3, imapcheck.SMTP:
	default:
		return req, malformed("unknown Auth-Protocol %q", truncate(proto))
	}

	user, err := single(h, "Auth-User", false)
	if err != nil {
		return req, err
	}
	if req.User, err = Unescape(user); err != nil {
		return req, malformed("Auth-User: %v", err)
	}
	if len(req.User) > maxUserBytes {
		return req, malformed("Auth-User longer than %d bytes", maxUserBytes)
	}

	pass, err := single(h, "Auth-Pass", false)
	if err != nil {
		return req, err
	}
	// The escape error names only the position, never the password.
	if req.Password, err = Unescape(pass); err != nil {
		return req, malformed("Auth-Pass: %v", err)
	}
	if len(req.Password) > maxPasswordBytes {
		return req, malformed("Auth-Pass longer than %d bytes", maxPasswordBytes)
	}

	req.Attempt = 1
	if attempt, err := single(h, "Auth-Login-Attempt", false); err != nil {
		return req, err
	} else if attempt != "" {
		n, err := strconv.Atoi(attempt)
		if err != nil || n < 1 {
			return req, malformed("bad Auth-Login-Attempt %q", truncate(attempt))
		}
		req.Attempt = n
	}

	if ip, err := single(h, "Client-IP", false); err != nil {
		return req, err
	} else if ip != "" {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return req, malformed("bad Client-IP %q", truncate(ip))
		}
		req.ClientIP = addr.Unmap()
	}
	return req, nil
}

// single returns the one value of header name. nginx sends each header at
// most once; two values mean the request did not come from nginx (or was
// tampered with), so it is refused rather than resolved either way.
func single(h fields, name string, required bool) (string, error) {
	value, n := h.field(name)
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
