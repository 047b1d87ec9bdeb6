package imapcheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// DefaultTimeout bounds one check when Verifier.Timeout is zero. Dovecot's
// auth penalty holds a login's answer up to 15 s (AUTH_PENALTY_MAX_SECS);
// 20 s lets such a check end with the backend's real answer, and a whole
// decision (this and a little more) stays well inside nginx's
// auth_http_timeout of 60 s.
const DefaultTimeout = 20 * time.Second

// Verifier checks credentials by logging in to the user's mail server.
//
// A Verifier is safe for concurrent use as long as its fields are not
// changed and Debug, if set, is itself safe for concurrent use.
type Verifier struct {
	// TLSConfig holds the roots for certificate verification when a
	// Request has none; nil means the system roots. It is cloned for each
	// check, and its ServerName is set from Request.ServerName or, when
	// both are empty, from the host part of Request.Address.
	TLSConfig *tls.Config
	// Timeout bounds one check, on top of the context given to Verify;
	// 0 means 10s.
	Timeout time.Duration
	// Dialer dials the server; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// Debug, if set, receives the protocol transcript of each check in one
	// Write when it ends: one "C: " or "S: " line per line on the wire
	// (after TLS), each after the milliseconds since the check began (to
	// see where a check's time goes), with the arguments of LOGIN,
	// PASS, AUTH and AUTHENTICATE, and whatever the client sends until the
	// server answers them, replaced by "<redacted>"; the password is also
	// scrubbed from the server's lines. User names do appear.
	Debug io.Writer
	// ForwardClientIP tells the server the mail client's address
	// (Request.ClientIP) before the login: over IMAP with the ID command's
	// "x-originating-ip" field (RFC 2971, as Dovecot reads it), over POP3
	// with XCLIENT when the greeting offers it. A server that trusts
	// imapgate's address (Dovecot: login_trusted_networks) then logs the
	// real client and keeps its auth penalty on that client, instead of
	// slowing every user's check after one guesser's failures. A server
	// that does not trust it ignores the address.
	ForwardClientIP bool
	// MaxRead bounds the bytes one check reads from the server, TLS
	// records included; 0 means DefaultMaxRead. A server that sends more
	// fails the check with ErrOversized.
	MaxRead int
}

// Error is a failed verification. Its text carries the server's reply or the
// network error for the log, never the password.
type Error struct {
	// Outcome is the verdict; it is never OK.
	Outcome Outcome
	// Reply is the server's reply line(s) as sent, for example
	// "NO [AUTHENTICATIONFAILED] Authentication failed."; it is empty when
	// the server did not answer.
	Reply string
	// Err is the underlying transport, TLS or protocol error, or why the
	// check was refused; it may be nil. A failed certificate check
	// unwraps to a *tls.CertificateVerificationError, a timeout to
	// context.DeadlineExceeded (and, once the server had accepted the
	// connection, to ErrStalled), too much data to ErrOversized. Should
	// its text hold the password (a server echoing it), Err is a wrapper
	// with the password scrubbed.
	Err error
	// Greeted says the server had sent its greeting, so that a failure
	// after it happened during the login itself.
	Greeted bool
}

// Error returns the outcome, the server's reply and the underlying error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("imapcheck: ")
	b.WriteString(e.Outcome.String())
	if e.Reply != "" {
		// %q keeps a hostile server from forging log lines.
		fmt.Fprintf(&b, ": server replied %q", e.Reply)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// with says which step e happened in.
func (e *Error) with(step string) *Error {
	if e.Err != nil {
		e.Err = fmt.Errorf("%s: %w", step, e.Err)
	}
	return e
}

// Verify logs in to req.Address as req.User with req.Password and logs out
// again. It returns (OK, nil) when the server accepts the credentials, and
// otherwise the verdict and a non-nil *Error.
//
// Over IMAP it uses LOGIN, or AUTHENTICATE PLAIN when the server advertises
// LOGINDISABLED (RFC 9051 section 6.2.3); over POP3 it uses USER and PASS, or
// AUTH PLAIN (RFC 5034), as CAPA (RFC 2449) allows. A server that will take
// neither on this connection, typically because it wants TLS first, gives
// Unsupported before it has seen the credentials.
//
// Credentials are checked before they reach the wire. An empty user is
// Rejected without dialing. POP3 has no way to quote, so a user or password
// containing CR, LF or NUL is Unsupported before dialing: it would otherwise
// end the command early and smuggle in another (RFC 1939 section 3). IMAP
// sends such strings as literals (RFC 9051 section 4.3), in which CR and LF
// are legal, so those go to the server as they are; NUL is not allowed even
// in a literal, so it is Unsupported too.
//
// The check is bounded by ctx and by v.Timeout, whichever ends first.
// Verify returns only after its connection is closed and go-imap's reader
// goroutine has ended.
func (v *Verifier) Verify(ctx context.Context, req Request) (Outcome, error) {
	if err := v.check(req); err != nil {
		return err.Outcome, err
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout())
	defer cancel()

	tr := newTranscript(v.Debug, req.Password)
	defer tr.flush()

	dialed, err := v.dialer().DialContext(ctx, "tcp", req.Address)
	if err != nil {
		return Temporary, v.fail(ctx, req, &Error{Outcome: Temporary, Err: err}, false)
	}
	// The conn is closed as soon as ctx ends; this is what cuts a stuck
	// go-imap client, which owns the conn's deadlines (it has no context).
	release := closeOnDone(ctx, dialed)
	defer release()
	defer dialed.Close()
	conn := newBudgetConn(dialed, v.maxRead())

	if e := v.login(ctx, req, conn, tr); e != nil {
		if conn.exceeded() && !errors.Is(e.Err, ErrOversized) {
			// go-imap's client does not wrap the read error it ends with.
			e = &Error{Outcome: Temporary, Err: conn.err(), Greeted: e.Greeted}
		}
		return e.Outcome, v.fail(ctx, req, e, true)
	}
	return OK, nil
}

// login logs in over raw, which it does not close: through TLS from the
// first byte when Security says so, then by the protocol's own steps.
func (v *Verifier) login(ctx context.Context, req Request, raw net.Conn, tr *transcript) *Error {
	// Until imapclient takes over the deadlines (POP3 keeps this one).
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	conn := raw
	if req.Security == SecurityTLS {
		tc, e := v.handshake(ctx, req, raw, alpn[req.Protocol])
		if e != nil {
			return e
		}
		conn = tc
	}
	s := &session{v: v, req: req, raw: raw, tr: tr}
	s.use(conn)
	greeting, e := readGreeting(s.r, req.Protocol)
	if e != nil {
		return e
	}
	if req.Protocol == IMAP {
		e = s.imap(ctx, greeting)
	} else {
		e = s.pop3(ctx, greeting)
	}
	if e != nil {
		e.Greeted = true
	}
	return s.delayed(ctx, e)
}

// delayed turns a timeout that came after the credentials were sent into
// Delayed: the server greeted and took the login, then held its answer.
// A cancelled check (the client gave up) stays Temporary.
func (s *session) delayed(ctx context.Context, e *Error) *Error {
	if e != nil && e.Outcome == Temporary && s.sentCredentials && !s.silentSinceGreeting &&
		(errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(e.Err, os.ErrDeadlineExceeded)) {
		e.Outcome = Delayed
	}
	return e
}

// alpn is the ALPN protocol (RFC 7301) offered with implicit TLS.
var alpn = map[Protocol]string{IMAP: "imap", POP3: "pop3"}

// session is one check's connection: raw as dialled, conn as the
// protocol speaks it (after TLS, through the transcript) and r reading it.
type session struct {
	v    *Verifier
	req  Request
	raw  net.Conn
	tr   *transcript
	conn net.Conn
	r    *bufio.Reader
	// sentCredentials is set once the login command is about to go out.
	sentCredentials bool
	// silentSinceGreeting: the credentials went out pipelined behind the
	// forwarding ID, and not even the ID was answered.
	silentSinceGreeting bool
}

// use makes the session speak over conn, as the transcript sees it.
func (s *session) use(conn net.Conn) {
	s.conn = s.tr.wrap(conn)
	s.r = bufio.NewReaderSize(s.conn, maxLine)
}

// startTLS upgrades the session with TLS once the server has agreed to
// it (IMAP STARTTLS, POP3 STLS): the same handshake for both protocols.
func (s *session) startTLS(ctx context.Context) *Error {
	if s.r.Buffered() > 0 {
		// Bytes sent before the handshake would be read as if they came
		// over TLS: a response injection (compare CVE-2011-0411).
		return &Error{Outcome: Temporary, Err: errors.New("server sent data before the TLS handshake")}
	}
	tc, e := s.v.handshake(ctx, s.req, s.raw, "")
	if e != nil {
		return e
	}
	s.use(tc)
	return nil
}

// check refuses a request that must not reach the wire.
func (v *Verifier) check(req Request) *Error {
	if req.User == "" {
		return &Error{Outcome: Rejected, Err: errors.New("empty user name")}
	}
	if err := Carries(req.Protocol, req.User, req.Password); err != nil {
		return &Error{Outcome: Unsupported, Err: err}
	}
	return nil
}

// Carries reports, as a nil error, whether proto can carry user and
// password to the server unchanged: IMAP sends CR and LF inside literals
// (RFC 9051 section 4.3) but no NUL; POP3 has no quoting at all, so CR, LF
// or NUL would end the command early and smuggle in another (RFC 1939
// section 3). The error never quotes the password.
func Carries(proto Protocol, user, password string) error {
	switch proto {
	case IMAP:
		if strings.ContainsRune(user, 0) || strings.ContainsRune(password, 0) {
			return errors.New("user or password contains NUL, which IMAP cannot carry")
		}
	case POP3:
		if strings.ContainsAny(user, "\r\n\x00") || strings.ContainsAny(password, "\r\n\x00") {
			return errors.New("user or password contains CR, LF or NUL, which POP3 cannot carry")
		}
	case SMTP:
		return errors.New("a check logs in over IMAP or POP3, not SMTP")
	default:
		return fmt.Errorf("unknown protocol %q", proto)
	}
	return nil
}

// ErrStalled is wrapped by the error of a check whose server accepted the
// connection and then did not answer within the check's time: a TLS
// handshake, a greeting or a login reply that never came. Error.Greeted
// tells the last two apart.
var ErrStalled = errors.New("server stopped answering")

// fail finishes e for the caller: a failure caused by the deadline or by a
// cancelled ctx says so, since the error seen on the wire is then only a
// closed connection, and the password is scrubbed from every text.
// connected says the server had accepted the connection.
func (v *Verifier) fail(ctx context.Context, req Request, e *Error, connected bool) *Error {
	if (e.Outcome == Temporary || e.Outcome == Delayed) && e.Err != nil && !errors.Is(e.Err, ErrOversized) {
		cause := context.Cause(ctx)
		if cause == nil && errors.Is(e.Err, os.ErrDeadlineExceeded) {
			// The conn's deadline, set to ctx's, fired first.
			cause = context.DeadlineExceeded
		}
		switch {
		case errors.Is(cause, context.DeadlineExceeded) && connected:
			when := "before its greeting"
			if e.Greeted {
				when = "after its greeting"
			}
			e.Err = fmt.Errorf("%w %s: %w: %w", ErrStalled, when, cause, e.Err)
		case cause != nil:
			e.Err = fmt.Errorf("%w: %w", cause, e.Err)
		}
	}
	e.Reply = scrub(e.Reply, req.Password)
	if e.Err != nil && req.Password != "" && strings.Contains(e.Err.Error(), req.Password) {
		e.Err = &scrubbedError{text: scrub(e.Err.Error(), req.Password), err: e.Err}
	}
	return e
}

func (v *Verifier) maxRead() int {
	if v.MaxRead <= 0 {
		return DefaultMaxRead
	}
	return v.MaxRead
}

func (v *Verifier) timeout() time.Duration {
	if v.Timeout <= 0 {
		return DefaultTimeout
	}
	return v.Timeout
}

func (v *Verifier) dialer() *net.Dialer {
	if v.Dialer == nil {
		return &net.Dialer{}
	}
	return v.Dialer
}

// tlsConfig returns the TLS configuration for req, offering alpn (RFC 7301)
// for implicit TLS.
func (v *Verifier) tlsConfig(req Request, alpn string) *tls.Config {
	var cfg *tls.Config
	if v.TLSConfig != nil {
		cfg = v.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if req.Roots != nil {
		cfg.RootCAs = req.Roots
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if req.ServerName != "" {
		cfg.ServerName = req.ServerName
	} else if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(req.Address)
		if err != nil {
			host = req.Address
		}
		cfg.ServerName = host
	}
	if alpn != "" && cfg.NextProtos == nil {
		cfg.NextProtos = []string{alpn}
	}
	return cfg
}

// handshake runs the TLS client handshake on conn, bounded by ctx.
func (v *Verifier) handshake(ctx context.Context, req Request, conn net.Conn, alpn string) (*tls.Conn, *Error) {
	cfg := v.tlsConfig(req, alpn)
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			// Loud on purpose: this is a misconfiguration or an attack,
			// not a passing network problem.
			err = fmt.Errorf("%w for %q: %w", ErrUntrustedCertificate, cfg.ServerName, err)
		} else {
			err = fmt.Errorf("TLS handshake: %w", err)
		}
		return nil, &Error{Outcome: Temporary, Err: err}
	}
	return tc, nil
}

// ErrUntrustedCertificate is wrapped by the error of a check whose
// server's certificate did not verify: a misconfigured CA or someone in
// the middle, which the operator must hear about.
var ErrUntrustedCertificate = errors.New("TLS certificate not trusted")

// maxLine bounds one line read from a server, so that a hostile server
// cannot make a check hold unbounded memory.
const maxLine = 4096

// readLine reads one line from r, which must have been made with
// bufio.NewReaderSize(…, maxLine), and returns it without its CRLF (a bare
// LF is accepted too).
func readLine(r *bufio.Reader) (string, error) {
	b, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errLineTooLong
	}
	if err == io.EOF && len(b) > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// closeOnDone closes conn when ctx ends. The returned release stops that and,
// if the close has already started, waits for it, so that no goroutine
// outlives the caller.
func closeOnDone(ctx context.Context, conn net.Conn) (release func()) {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		close(done)
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// scrub replaces every occurrence of secret in s, so that a server echoing
// the password cannot put it into a log.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "<redacted>")
}

// scrubbedError is an error whose text had the password removed.
type scrubbedError struct {
	text string
	err  error
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }
