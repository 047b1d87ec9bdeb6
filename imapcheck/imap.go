package imapcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// verifyIMAP logs in over IMAP on raw, which it does not close.
func (v *Verifier) verifyIMAP(ctx context.Context, req Request, raw net.Conn, tr *transcript) *Error {
	// Until imapclient takes over the deadlines.
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	conn := raw
	if v.security() == SecurityTLS {
		tc, e := v.handshake(ctx, req, raw, "imap")
		if e != nil {
			return e
		}
		conn = tc
	}
	conn = tr.wrap(conn)

	// We read the greeting ourselves, before imapclient starts, and then
	// replay it to the client:
	//   - Client.WaitGreeting returns "connection closed before greeting"
	//     at random for a BYE greeting, as it selects on two channels the
	//     reader closes one after the other; we keep the BYE's text;
	//   - imapclient.NewStartTLS sends STARTTLS before the greeting has
	//     arrived, and runs the handshake without a context;
	//   - Login would be pipelined ahead of the greeting, which some
	//     servers do not survive (go-imap issue #600).
	r := bufio.NewReaderSize(conn, maxLine)
	greeting, e := imapGreeting(r)
	if e != nil {
		return e
	}
	if v.security() == SecurityStartTLS {
		tconn, e := v.imapStartTLS(ctx, req, raw, conn, r, tr)
		if e != nil {
			return e
		}
		// After STARTTLS the server sends no greeting, but
		// imapclient.New waits for one; feed it one. Having no
		// CAPABILITY code, it makes the client ask for the capabilities
		// again, as RFC 9051 section 6.2.1 requires after the upgrade.
		conn = tconn
		r = bufio.NewReaderSize(tconn, maxLine)
		greeting = "* OK TLS established"
	}
	if v.ForwardClientIP && req.ClientIP.IsValid() {
		if e := imapForwardClient(conn, r, req.ClientIP); e != nil {
			return e
		}
	}
	replay := io.MultiReader(strings.NewReader(greeting+"\r\n"), r)

	// Close returns only once the client's reader goroutine has ended.
	c := imapclient.New(&greetedConn{Conn: conn, r: replay}, nil)
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		return imapFailure("greeting", err)
	}
	caps := c.Caps()
	if caps == nil {
		return &Error{Outcome: Temporary, Err: errors.New("could not read the server's capabilities")}
	}

	switch {
	case !caps.Has(imap.CapLoginDisabled):
		e = imapFailure("LOGIN", c.Login(req.User, req.Password).Wait())
	case caps.Has(imap.AuthCap(sasl.Plain)):
		// RFC 9051 section 6.2.3: LOGINDISABLED forbids only LOGIN.
		e = imapFailure("AUTHENTICATE", c.Authenticate(sasl.NewPlainClient("", req.User, req.Password)))
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

// imapGreeting reads the server's greeting (RFC 9051 section 7.1) and returns
// it if it is OK.
func imapGreeting(r *bufio.Reader) (string, *Error) {
	line, err := readLine(r)
	if err != nil {
		return "", &Error{Outcome: Temporary, Err: fmt.Errorf("greeting: %w", err)}
	}
	switch f := strings.Fields(line); {
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "OK"):
		return line, nil
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "BYE"):
		return "", &Error{Outcome: Temporary, Reply: line[2:]}
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "PREAUTH"):
		// RFC 9051 section 7.1.4: the server logged us in without
		// credentials, so it cannot tell whether they are right.
		return "", &Error{Outcome: Unsupported, Reply: line[2:], Err: errors.New("server greeted with PREAUTH, so the password cannot be checked")}
	}
	return "", &Error{Outcome: Temporary, Err: fmt.Errorf("malformed greeting %q", line)}
}

// imapStartTLS upgrades raw with STARTTLS (RFC 9051 section 6.2.1), sending
// the command on conn, which is raw as the transcript sees it, and reading
// the reply from r. It returns the TLS connection as the transcript sees it.
func (v *Verifier) imapStartTLS(ctx context.Context, req Request, raw, conn net.Conn, r *bufio.Reader, tr *transcript) (net.Conn, *Error) {
	const tag = "S1"
	if _, err := io.WriteString(conn, tag+" STARTTLS\r\n"); err != nil {
		return nil, &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: %w", err)}
	}
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: %w", err)}
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "*" {
			continue // untagged data, such as CAPABILITY
		}
		if f[0] != tag || len(f) < 2 {
			return nil, &Error{Outcome: Temporary, Err: fmt.Errorf("STARTTLS: unexpected reply %q", line)}
		}
		if strings.EqualFold(f[1], "OK") {
			break
		}
		return nil, &Error{Outcome: Unsupported, Reply: line[len(tag)+1:], Err: errors.New("server refused STARTTLS")}
	}
	if r.Buffered() > 0 {
		// Bytes sent before the handshake would be read as if they came
		// over TLS: a response injection (compare CVE-2011-0411).
		return nil, &Error{Outcome: Temporary, Err: errors.New("STARTTLS: server sent data before the TLS handshake")}
	}
	tc, e := v.handshake(ctx, req, raw, "")
	if e != nil {
		return nil, e
	}
	return tr.wrap(tc), nil
}

// imapForwardClient tells the server the client's address with the ID
// command (RFC 2971) and Dovecot's "x-originating-ip" field, before
// imapclient takes over the connection (its ID cannot carry that field).
// The server's answer does not matter: one that does not know ID, or does
// not trust us, goes on as if nothing was said.
func imapForwardClient(conn io.Writer, r *bufio.Reader, ip netip.Addr) *Error {
	const tag = "F1"
	if _, err := fmt.Fprintf(conn, "%s ID (\"x-originating-ip\" \"%s\")\r\n", tag, ip.Unmap()); err != nil {
		return &Error{Outcome: Temporary, Err: fmt.Errorf("ID: %w", err)}
	}
	for {
		line, err := readLine(r)
		if err != nil {
			return &Error{Outcome: Temporary, Err: fmt.Errorf("ID: %w", err)}
		}
		if f := strings.Fields(line); len(f) >= 2 && f[0] == tag {
			return nil
		}
		// Untagged data (the server's own ID) is skipped.
	}
}

// greetedConn is a net.Conn whose reads come from r, which starts with the
// greeting.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (c *greetedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
