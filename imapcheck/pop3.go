package imapcheck

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxCapaLines bounds a CAPA listing; real servers send about a dozen.
const maxCapaLines = 100

// errContinue is returned for a "+ " continuation request (RFC 5034 section
// 4), which only AUTH expects.
var errContinue = errors.New("server sent an unexpected continuation request")

// pop3 logs in over POP3, the greeting read.
func (s *session) pop3(ctx context.Context, greeting string) *Error {
	c := &pop3Client{conn: s.conn, r: s.r}
	caps, err := c.capa()
	if err != nil {
		return pop3Failure("CAPA", err, Temporary)
	}
	if s.req.Security == SecurityStartTLS {
		if caps, err = s.pop3StartTLS(ctx, c); err != nil {
			return err.(*Error)
		}
		c = &pop3Client{conn: s.conn, r: s.r}
	}
	// Dovecot offers XCLIENT in its greeting to the networks it trusts.
	if s.v.ForwardClientIP && s.req.ClientIP.IsValid() && strings.Contains(strings.ToUpper(greeting), "[XCLIENT]") {
		if _, err := c.cmd("XCLIENT ADDR=%s", s.req.ClientIP.Unmap()); err != nil {
			var pe *pop3Error
			if !errors.As(err, &pe) {
				return pop3Failure("XCLIENT", err, Temporary)
			}
			// Refused: log in without it, as with a server that never
			// offered it.
		}
	}
	s.sentCredentials = true
	e := c.login(caps, s.req.User, s.req.Password)
	if e == nil || e.Outcome != Temporary {
		// Say goodbye (RFC 1939 section 6) without waiting for the
		// answer: the verdict is in, and nginx is waiting for it.
		io.WriteString(c.conn, "QUIT\r\n")
	}
	return e
}

// pop3StartTLS upgrades the session with STLS (RFC 2595) and returns the
// capabilities the server has over TLS: those seen before must be
// forgotten (RFC 2595 section 4). The error is an *Error.
func (s *session) pop3StartTLS(ctx context.Context, c *pop3Client) (map[string][]string, error) {
	if _, err := c.cmd("STLS"); err != nil {
		e := pop3Failure("STLS", err, Unsupported)
		if e.Outcome == Unsupported {
			e.Err = errors.New("server refused STLS")
		}
		return nil, e
	}
	if e := s.startTLS(ctx); e != nil {
		return nil, e.with("STLS")
	}
	caps, err := (&pop3Client{conn: s.conn, r: s.r}).capa()
	if err != nil {
		return nil, pop3Failure("CAPA", err, Temporary)
	}
	return caps, nil
}

// login sends the credentials as CAPA allows. It decides from CAPA before
// sending them: Dovecot answers "-ERR [AUTH]" both for a wrong password
// and for plaintext login refused, so the reply could not tell them apart.
func (c *pop3Client) login(caps map[string][]string, user, password string) *Error {
	_, hasUser := caps["USER"]
	switch {
	case caps == nil || hasUser:
		// RFC 2449 section 6.7. A server without CAPA predates RFC 2449
		// and is tried with USER and PASS (RFC 1939 section 7).
		if _, err := c.cmd("USER %s", user); err != nil {
			return pop3Failure("USER", err, Rejected)
		}
		if _, err := c.cmd("PASS %s", password); err != nil {
			return pop3Failure("PASS", err, Rejected)
		}
		return nil
	case hasWord(caps["SASL"], "PLAIN"):
		if err := c.authPlain(user, password); err != nil {
			return pop3Failure("AUTH", err, Rejected)
		}
		return nil
	}
	// Dovecot's plaintext port with disable_plaintext_auth: STLS, and SASL
	// with no mechanisms.
	return &Error{Outcome: Unsupported, Err: errors.New("server offers neither USER nor SASL PLAIN, so it refuses plaintext login on this connection: use STLS or TLS")}
}

// pop3Failure classifies the error of a POP3 step. A -ERR reply gets dflt,
// and, to a login (dflt Rejected), whatever its response code (RFC 2449
// section 8, RFC 3206) says; anything else (network, TLS, timeout, a hang-up,
// a malformed reply) is Temporary.
func pop3Failure(step string, err error, dflt Outcome) *Error {
	var pe *pop3Error
	if !errors.As(err, &pe) {
		return &Error{Outcome: Temporary, Err: fmt.Errorf("%s: %w", step, err)}
	}
	e := &Error{Outcome: dflt, Reply: pe.Line}
	switch {
	case dflt != Rejected:
	case pe.Code == "AUTH":
		e.Outcome = Rejected
	case pe.Code == "IN-USE", pe.Code == "LOGIN-DELAY":
		e.Outcome = Temporary
	case strings.HasPrefix(pe.Code, "SYS/"):
		// SYS/TEMP is a passing fault. SYS/PERM (RFC 3206 section 4) is
		// a lasting one, such as a broken user database, but still the
		// server's, not a verdict on the password: Rejected would tell
		// a user with the right password that it is wrong.
		e.Outcome = Temporary
	}
	return e
}

// pop3Error is a -ERR reply (RFC 1939 section 3).
type pop3Error struct {
	// Line is the reply as sent.
	Line string
	// Code is the response code in brackets (RFC 2449 section 8), in
	// upper case, or "".
	Code string
}

func (e *pop3Error) Error() string { return e.Line }

// pop3Client speaks the few POP3 commands a login needs.
type pop3Client struct {
	conn io.Writer
	r    *bufio.Reader
}

// cmd sends one command and reads its status line. It returns the text after
// +OK, or a *pop3Error for -ERR.
func (c *pop3Client) cmd(format string, args ...any) (string, error) {
	line := fmt.Sprintf(format, args...)
	if strings.ContainsAny(line, "\r\n\x00") {
		// Verify refuses such credentials first; this is the last line
		// of defence against a second command smuggled into the first.
		return "", errors.New("command contains CR, LF or NUL")
	}
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return "", err
	}
	return c.reply()
}

// reply reads a status line (RFC 1939 section 3).
func (c *pop3Client) reply() (string, error) {
	line, err := c.line()
	if err != nil {
		return "", err
	}
	switch {
	case line == "+OK" || strings.HasPrefix(line, "+OK "):
		return strings.TrimPrefix(line[3:], " "), nil
	case line == "-ERR" || strings.HasPrefix(line, "-ERR "):
		e := &pop3Error{Line: line}
		if rest, ok := strings.CutPrefix(line, "-ERR ["); ok {
			if code, _, ok := strings.Cut(rest, "]"); ok {
				e.Code = strings.ToUpper(code)
			}
		}
		return "", e
	case isContinuation(line):
		return strings.TrimPrefix(line[1:], " "), errContinue
	}
	return "", fmt.Errorf("malformed reply %q", line)
}

func (c *pop3Client) line() (string, error) {
	line, err := readLine(c.r)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // the server hung up on us
	}
	return line, err
}

// capa returns the server's capabilities (RFC 2449 section 5), keyed by
// upper-case tag, or nil if the server does not know CAPA.
func (c *pop3Client) capa() (map[string][]string, error) {
	if _, err := c.cmd("CAPA"); err != nil {
		var pe *pop3Error
		if errors.As(err, &pe) {
			return nil, nil
		}
		return nil, err
	}
	caps := make(map[string][]string)
	for range maxCapaLines {
		line, err := c.line()
		if err != nil {
			return nil, err
		}
		if line == "." {
			return caps, nil
		}
		// Undo dot-stuffing (RFC 1939 section 3).
		f := strings.Fields(strings.TrimPrefix(line, "."))
		if len(f) > 0 {
			caps[strings.ToUpper(f[0])] = f[1:]
		}
	}
	return nil, errors.New("CAPA listing too long")
}

// authPlain logs in with AUTH PLAIN (RFC 5034, RFC 4616).
func (c *pop3Client) authPlain(user, password string) error {
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	var err error
	// RFC 5034 section 4: send the initial response with the command only
	// if the line stays within 255 octets (RFC 2449 section 4).
	if len("AUTH PLAIN ")+len(resp)+2 <= 255 {
		_, err = c.cmd("AUTH PLAIN %s", resp)
	} else {
		_, err = c.cmd("AUTH PLAIN")
	}
	if errors.Is(err, errContinue) {
		// Either we sent no initial response, or the server ignored it
		// and asks with an empty challenge.
		_, err = c.cmd("%s", resp)
	}
	if errors.Is(err, errContinue) {
		c.cmd("*") // cancel (RFC 5034 section 4)
		return errors.New("AUTH PLAIN: server asked for more than one response")
	}
	return err
}

// hasWord reports whether words contains w, ignoring case.
func hasWord(words []string, w string) bool {
	for _, x := range words {
		if strings.EqualFold(x, w) {
			return true
		}
	}
	return false
}
