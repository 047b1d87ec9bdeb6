package imapcheck

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// transcript writes what a check sends and receives to a debug writer, a
// line at a time, each with the time since the check began, with
// credentials redacted; the whole check in one Write when it ends, so
// that concurrent checks do not mix their lines. A nil *transcript does
// nothing.
type transcript struct {
	w        io.Writer
	password string
	start    time.Time
	out      bytes.Buffer

	mu        sync.Mutex // the go-imap reader goroutine logs concurrently
	client    []byte     // partial line sent
	server    []byte     // partial line received
	redacting bool       // a login command is in flight
}

// newTranscript returns a transcript writing to w, or nil if w is nil.
func newTranscript(w io.Writer, password string) *transcript {
	if w == nil {
		return nil
	}
	return &transcript{w: w, password: password, start: time.Now()}
}

// wrap returns conn, logging what passes through it.
func (t *transcript) wrap(conn net.Conn) net.Conn {
	if t == nil {
		return conn
	}
	return &transcriptConn{Conn: conn, t: t}
}

// flush writes out partial lines.
func (t *transcript) flush() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.client) > 0 {
		t.line(true, string(t.client))
	}
	if len(t.server) > 0 {
		t.line(false, string(t.server))
	}
	t.client, t.server = nil, nil
	if t.out.Len() > 0 {
		t.w.Write(t.out.Bytes())
		t.out.Reset()
	}
}

func (t *transcript) add(fromClient bool, p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	buf := &t.server
	if fromClient {
		buf = &t.client
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			*buf = append(*buf, p...)
			if len(*buf) > maxLine {
				t.line(fromClient, string(*buf))
				*buf = (*buf)[:0]
			}
			return
		}
		*buf = append(*buf, p[:i]...)
		p = p[i+1:]
		t.line(fromClient, strings.TrimSuffix(string(*buf), "\r"))
		*buf = (*buf)[:0]
	}
}

// line writes one line; t.mu is held.
func (t *transcript) line(fromClient bool, s string) {
	s = scrub(s, t.password)
	prefix := "S: "
	if fromClient {
		prefix = "C: "
		if t.redacting {
			// A literal or a SASL response belonging to the login.
			s = "<redacted>"
		} else if r, ok := redactLogin(s); ok {
			s = r
			t.redacting = true
		}
	} else if t.redacting && !isContinuation(s) && !strings.HasPrefix(s, "* ") {
		// A final reply to the login: whatever comes next is not secret.
		t.redacting = false
	}
	fmt.Fprintf(&t.out, "%8.3fms %s%s\n", float64(time.Since(t.start).Microseconds())/1000, prefix, s)
}

// isContinuation reports whether s is an IMAP (RFC 9051 section 7.5) or POP3
// SASL (RFC 5034 section 4) continuation request.
func isContinuation(s string) bool {
	return s == "+" || strings.HasPrefix(s, "+ ")
}

// redactLogin returns line with the arguments of a command that carries
// credentials replaced by "<redacted>": POP3 PASS and AUTH, IMAP LOGIN and
// AUTHENTICATE (after the tag). The SASL mechanism name is kept.
func redactLogin(line string) (string, bool) {
	f := strings.Fields(line)
	keep := 0
	switch {
	case len(f) >= 1 && strings.EqualFold(f[0], "PASS"):
		keep = 1
	case len(f) >= 1 && strings.EqualFold(f[0], "AUTH"):
		keep = 2
	case len(f) >= 2 && strings.EqualFold(f[1], "LOGIN"):
		keep = 2
	case len(f) >= 2 && strings.EqualFold(f[1], "AUTHENTICATE"):
		keep = 3
	default:
		return line, false
	}
	if len(f) <= keep {
		return line, true
	}
	return strings.Join(f[:keep], " ") + " <redacted>", true
}

// transcriptConn is a net.Conn that logs to a transcript.
type transcriptConn struct {
	net.Conn
	t *transcript
}

func (c *transcriptConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.add(false, p[:n])
	return n, err
}

func (c *transcriptConn) Write(p []byte) (int, error) {
	// Logged before writing, so that the server's answer cannot appear
	// first and end the redaction of a login before it begins.
	c.t.add(true, p)
	return c.Conn.Write(p)
}
