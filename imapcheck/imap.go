package imapcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// imap logs in over IMAP, the greeting read.
//
// The greeting is read by readGreeting, before imapclient starts, and then
// replayed to the client:
//   - Client.WaitGreeting returns "connection closed before greeting" at
//     random for a BYE greeting, as it selects on two channels the reader
//     closes one after the other; we keep the BYE's text;
//   - imapclient.NewStartTLS sends STARTTLS before the greeting has
//     arrived, and runs the handshake without a context;
//   - Login would be pipelined ahead of the greeting, which some servers
//     do not survive (a command before the greeting).
func (s *session) imap(ctx context.Context, greeting string) *Error {
	if s.req.Security == SecurityStartTLS {
		if e := s.imapStartTLS(ctx); e != nil {
			return e
		}
		// After STARTTLS the server sends no greeting, but imapclient.New
		// waits for one; feed it one. Having no CAPABILITY code, it makes
		// the client ask for the capabilities again, as RFC 9051 section
		// 6.2.1 requires after the upgrade.
		greeting = "* OK TLS established"
	}
	conn, forward := s.imapConn(greeting)
	c := imapclient.New(conn, nil)
	defer func() {
		// Close returns only once the client's reader goroutine, which
		// owns the filter, has ended; only then is forward.done ours.
		c.Close()
		// A server that never answered the ID sent nothing after its
		// greeting: it stopped answering, rather than held the login's
		// answer as Dovecot's penalty does (it answers the ID at once).
		s.silentSinceGreeting = forward != nil && !forward.done
	}()
	if err := c.WaitGreeting(); err != nil {
		return imapFailure("greeting", err)
	}
	caps := c.Caps()
	if caps == nil {
		return &Error{Outcome: Temporary, Err: errors.New("could not read the server's capabilities")}
	}
	var e *Error
	s.sentCredentials = true
	switch {
	case !caps.Has(imap.CapLoginDisabled):
		e = imapFailure("LOGIN", c.Login(s.req.User, s.req.Password).Wait())
	case caps.Has(imap.AuthCap(sasl.Plain)):
		// RFC 9051 section 6.2.3: LOGINDISABLED forbids only LOGIN.
		e = imapFailure("AUTHENTICATE", c.Authenticate(sasl.NewPlainClient("", s.req.User, s.req.Password)))
	default:
		e = &Error{Outcome: Unsupported, Err: errors.New("server advertises LOGINDISABLED and no AUTH=PLAIN, so it refuses plaintext login on this connection: use STARTTLS or TLS")}
	}
	if e == nil || e.Outcome != Temporary {
		// Say goodbye (RFC 9051 section 6.1.3) without waiting for the
		// answer: the verdict is in, and nginx is waiting for it.
		c.Logout()
	}
	return e
}

// imapFailure classifies the error of an IMAP step; nil means success.
//
// A tagged NO to LOGIN or AUTHENTICATE means the credentials were refused
// (RFC 9051 section 6.2.3), unless its response code (RFC 5530) says the
// server could not decide now. BAD, BYE and anything that is not a server
// reply (network, TLS, timeout, a hang-up as io.ErrUnexpectedEOF, a
// malformed reply) are Temporary.
func imapFailure(step string, err error) *Error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if !errors.As(err, &ie) {
		return &Error{Outcome: Temporary, Err: fmt.Errorf("%s: %w", step, err)}
	}
	e := &Error{Outcome: Rejected, Reply: imapReply(ie)}
	switch {
	case ie.Type != imap.StatusResponseTypeNo:
		e.Outcome = Temporary
	case ie.Code == imap.ResponseCodeUnavailable, ie.Code == imap.ResponseCodeInUse,
		ie.Code == imap.ResponseCodeLimit, ie.Code == imap.ResponseCodeServerBug:
		e.Outcome = Temporary
	case ie.Code == imap.ResponseCodePrivacyRequired:
		// The credentials may be right, but this server takes them only
		// over TLS: the operator must change the connection, not the
		// user the password.
		e.Outcome = Unsupported
		e.Err = errors.New("server requires TLS for login (PRIVACYREQUIRED): use STARTTLS or TLS")
	}
	// AUTHENTICATIONFAILED, AUTHORIZATIONFAILED, EXPIRED, no code, and
	// codes we do not know stay Rejected.
	return e
}

// imapReply formats a status response as the server sent it.
func imapReply(ie *imap.Error) string {
	s := string(ie.Type)
	if ie.Code != "" {
		s += " [" + string(ie.Code) + "]"
	}
	if ie.Text != "" {
		s += " " + ie.Text
	}
	return s
}

// imapStartTLS asks for TLS with STARTTLS (RFC 9051 section 6.2.1) and
// upgrades the session once the server agrees.
func (s *session) imapStartTLS(ctx context.Context) *Error {
	const tag = "S1"
	if _, err := io.WriteString(s.conn, tag+" STARTTLS\r\n"); err != nil {
		return &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: %w", err)}
	}
	for {
		line, err := readLine(s.r)
		if err != nil {
			return &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: %w", err)}
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "*" {
			continue // untagged data, such as CAPABILITY
		}
		if f[0] != tag || len(f) < 2 {
			return &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: unexpected reply %q", line)}
		}
		if !strings.EqualFold(f[1], "OK") {
			return &Error{Outcome: Unsupported, Reply: line[len(tag)+1:], Err: errors.New("server refused STARTTLS")}
		}
		if e := s.startTLS(ctx); e != nil {
			return e.with("STARTTLS")
		}
		return nil
	}
}

// forwardTag is the tag of the ID command that forwards the client's
// address; imapclient's own tags are never it.
const forwardTag = "F1"

// imapConn is the connection imapclient is given: its reads start with
// the greeting, already read. When the client's address is forwarded, the
// ID command (RFC 2971) with Dovecot's "x-originating-ip" field goes out
// ahead of imapclient's first command, in the same write: the login is
// pipelined behind the ID without waiting for its answer (RFC 9051
// section 5.5), one round trip less, and the server reads both at once.
// The server's answer to the ID does not matter (one that does not know
// ID, or does not trust us, goes on as if nothing was said); forward
// takes it out of what imapclient reads. (imapclient's own ID cannot
// carry that field.)
func (s *session) imapConn(greeting string) (conn *greetedConn, forward *idAnswerFilter) {
	var server io.Reader = s.r
	conn = &greetedConn{Conn: s.conn}
	if s.v.ForwardClientIP && s.req.ClientIP.IsValid() {
		conn.ahead = fmt.Appendf(nil, "%s ID (\"x-originating-ip\" \"%s\")\r\n", forwardTag, s.req.ClientIP.Unmap())
		forward = &idAnswerFilter{r: s.r}
		server = forward
	}
	conn.r = io.MultiReader(strings.NewReader(greeting+"\r\n"), server)
	return conn, forward
}

// idAnswerFilter passes the server's lines on to imapclient, but for the
// answer to the forwarding ID: its untagged "* ID" data and its tagged
// completion, which come before anything the login is answered with
// (commands are answered in order). After the tagged line it passes
// everything untouched.
type idAnswerFilter struct {
	r       *bufio.Reader
	pending []byte // a line to pass on, partly read
	done    bool
	// inID: the line being read continues the server's "* ID" data after
	// a literal (RFC 9051 section 4.3), and is dropped too.
	inID bool
}

func (f *idAnswerFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 && !f.done {
		line, err := f.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// No line of the ID's answer is that long: pass it on, and
			// leave the rest of the stream alone.
			f.pending, f.done = append(f.pending[:0], line...), true
			break
		}
		if err != nil {
			return 0, err
		}
		switch {
		case f.inID || bytes.HasPrefix(line, []byte("* ID ")):
			// The server's own ID: dropped, literals and all.
			n, ok := literalSize(line)
			if ok {
				if _, err := f.r.Discard(n); err != nil {
					return 0, err
				}
			}
			f.inID = ok
		case bytes.HasPrefix(line, []byte(forwardTag+" ")):
			f.done = true // the ID's completion: dropped, and no more to drop
		default:
			f.pending = append(f.pending[:0], line...)
		}
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		return n, nil
	}
	return f.r.Read(p)
}

// literalSize returns n when line ends with a literal's announcement
// "{n}" or "{n+}" (RFC 9051 section 4.3, RFC 7888), whose n bytes follow.
func literalSize(line []byte) (int, bool) {
	line = bytes.TrimRight(line, "\r\n")
	if !bytes.HasSuffix(line, []byte("}")) {
		return 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))))
	if err != nil || n < 0 || n > maxLine {
		return 0, false
	}
	return n, true
}

// greetedConn is a net.Conn whose reads come from r, which starts with the
// greeting, and whose first write sends ahead before what it is given.
type greetedConn struct {
	net.Conn
	r     io.Reader
	ahead []byte
}

func (c *greetedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *greetedConn) Write(p []byte) (int, error) {
	if c.ahead == nil {
		return c.Conn.Write(p)
	}
	b := append(c.ahead, p...)
	c.ahead = nil
	n, err := c.Conn.Write(b)
	return max(0, n-(len(b)-len(p))), err
}
