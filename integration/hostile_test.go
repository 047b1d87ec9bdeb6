package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// hostile is a mail server of the test's own that misbehaves on purpose,
// one goroutine per connection.
type hostile struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// startHostile serves addr with script until the test ends.
func startHostile(t *testing.T, addr string, script func(c net.Conn, r *bufio.Reader)) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("hostile server on %s: %v", addr, err)
	}
	h := &hostile{ln: ln, conns: map[net.Conn]bool{}}
	h.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns[c] = true
			h.mu.Unlock()
			h.wg.Go(func() {
				defer func() {
					c.Close()
					h.mu.Lock()
					delete(h.conns, c)
					h.mu.Unlock()
				}()
				script(c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
}

// endless writes "AAAA…" until the peer hangs up.
func endless(c net.Conn) {
	chunk := bytes.Repeat([]byte("A"), 16<<10)
	for {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// endlessGreeting greets with a line that never ends.
func endlessGreeting(prefix string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, prefix)
		endless(c)
	}
}

// imapUntil greets like an IMAP server and answers ID, until a command
// containing verb arrives; then it hands over to then.
func imapUntil(verb string, then func(c net.Conn, tag string)) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && strings.EqualFold(f[1], verb):
				then(c, f[0])
				return
			case len(f) >= 2:
				fmt.Fprintf(c, "%s OK %s done\r\n", f[0], f[1])
			}
		}
	}
}

// pop3Until greets like a POP3 server, offers USER, and answers +OK until
// a command verb arrives; then it hands over to then.
func pop3Until(verb string, then func(c net.Conn)) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "+OK hostile ready\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) >= 1 && strings.EqualFold(f[0], verb):
				then(c)
				return
			case len(f) >= 1 && strings.EqualFold(f[0], "CAPA"):
				io.WriteString(c, "+OK\r\nUSER\r\n.\r\n")
			default:
				io.WriteString(c, "+OK\r\n")
			}
		}
	}
}

// stall reads whatever comes and never answers.
func stall(c net.Conn, r *bufio.Reader) { io.Copy(io.Discard, r) }

// greetThenStall greets like a server of proto, then never answers.
func greetThenStall(greeting string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, greeting+"\r\n")
		stall(c, r)
	}
}

// usage is what imapgate uses, by its own /metrics.
type usage struct {
	rss, goroutines, fds float64
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %.0f goroutines, %.0f open fds", u.rss/(1<<20), u.goroutines, u.fds)
}

func usageOf(t *testing.T, gw *harness.Gateway) usage {
	t.Helper()
	m := scrape(t, gw)
	return usage{rss: m["process_resident_memory_bytes"], goroutines: m["go_goroutines"], fds: m["process_open_fds"]}
}

// Slack of "back to baseline": a few goroutines and descriptors come and
// go (workers waiting for the next connection, the scrape itself), and
// the Go runtime keeps some memory it has used for a while. A backend
// read without bounds costs gigabytes, a leak a goroutine per check.
const (
	slackGoroutines = 16
	slackFDs        = 16
	slackRSS        = 48 << 20
)

// checkBaseline waits up to 30 s for imapgate's goroutines and open
// descriptors to come back to base, and checks its RSS is near base too.
func checkBaseline(t *testing.T, gw *harness.Gateway, base usage) usage {
	t.Helper()
	var now usage
	for range 60 {
		now = usageOf(t, gw)
		if now.goroutines <= base.goroutines+slackGoroutines && now.fds <= base.fds+slackFDs {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if now.goroutines > base.goroutines+slackGoroutines || now.fds > base.fds+slackFDs || now.rss > base.rss+slackRSS {
		t.Errorf("imapgate did not come back to its baseline: %v, was %v", now, base)
	}
	t.Logf("imapgate: %v after, %v before", now, base)
	return now
}

// waitLoggedReason waits for imapgate's login line for user with the
// given reason, logged at or after line from.
func waitLoggedReason(t *testing.T, gw *harness.Gateway, from int, user string, reasons ...string) harness.LoginRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	line, _, err := gw.Imapgate.WaitLine(ctx, from, func(l string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(l))
		if r.Get("msg") != "login" || r.Get("user") != user {
			return false
		}
		for _, want := range reasons {
			if r.Get("reason") == want {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Errorf("imapgate logged no login of %s with reason %q: %v", user, reasons, err)
		return nil
	}
	return harness.LoginRecord(harness.ParseLogLine(line))
}
