package imapcheck

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// endless writes "AAAA…" to the peer until the client hangs up.
func endless(p *peer) {
	chunk := bytes.Repeat([]byte("A"), 32<<10)
	for {
		if _, err := p.conn.Write(chunk); err != nil {
			return
		}
	}
}

// allocated returns the bytes the process allocated while f ran. Other
// goroutines allocate too, so it is an upper bound on f's share.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A server that sends without end costs a check a bounded amount of
// memory and fails it with ErrOversized as soon as the budget is spent,
// not at the timeout: however long the greeting, a reply line after
// LOGIN, a literal or a CAPA listing.
func TestHostileServerIsBounded(t *testing.T) {
	const greeting = "* OK [CAPABILITY IMAP4rev1] ready"
	for _, tc := range []struct {
		name   string
		proto  Protocol
		script func(p *peer)
	}{{
		name:   "IMAP endless greeting",
		proto:  IMAP,
		script: func(p *peer) { p.conn.Write([]byte("* OK ")); endless(p) },
	}, {
		name:  "IMAP endless reply to LOGIN",
		proto: IMAP,
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.conn.Write([]byte("* OK "))
			endless(p)
		},
	}, {
		name:  "IMAP endless untagged lines",
		proto: IMAP,
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			line := []byte(strings.Repeat("* OK still thinking\r\n", 1000))
			for {
				if _, err := p.conn.Write(line); err != nil {
					return
				}
			}
		},
	}, {
		name:  "IMAP huge literal",
		proto: IMAP,
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.conn.Write([]byte("* LIST () \"/\" {4000000000}\r\n"))
			endless(p)
		},
	}, {
		name:   "POP3 endless greeting",
		proto:  POP3,
		script: func(p *peer) { p.conn.Write([]byte("+OK ")); endless(p) },
	}, {
		name:  "POP3 endless CAPA line",
		proto: POP3,
		script: func(p *peer) {
			p.send("+OK ready")
			p.expect("CAPA")
			p.send("+OK")
			endless(p)
		},
	}, {
		name:  "POP3 reply to PASS without end",
		proto: POP3,
		script: func(p *peer) {
			p.send("+OK ready")
			p.expect("CAPA")
			p.send("+OK", "USER", ".")
			p.expect("USER alice")
			p.send("+OK")
			p.expect("PASS s3cret")
			p.conn.Write([]byte("+OK "))
			endless(p)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			// A timeout far longer than the check takes: it must end on
			// the budget, not on the clock.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			v := &Verifier{Timeout: time.Minute}
			var got Outcome
			var err error
			n := allocated(func() {
				got, err = v.Verify(ctx, Request{Protocol: tc.proto, Address: srv.Addr, User: "alice", Password: "s3cret"})
			})
			checkResult(t, got, err, Temporary, "s3cret", "")
			if !errors.Is(err, ErrOversized) {
				t.Errorf("err = %v, want ErrOversized", err)
			}
			if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Errorf("the check ended on its deadline: %v", err)
			}
			// go-imap's client, the TLS-less session and the server's side
			// in this process allocate some; an unbounded read would be
			// gigabytes.
			if n > 2<<20 {
				t.Errorf("the check allocated %d KiB, want at most 2 MiB", n>>10)
			}
			t.Logf("%v; %d KiB allocated", err, n>>10)
		})
	}
}

// A POP3 server that lists capabilities without end is cut off by the
// listing's own bound.
func TestPOP3EndlessCAPAListing(t *testing.T) {
	srv := startScript(t, nil, func(p *peer) {
		p.send("+OK ready")
		p.expect("CAPA")
		p.send("+OK")
		for {
			if _, err := p.conn.Write([]byte("X-FILLER\r\n")); err != nil {
				return
			}
		}
	})
	v := &Verifier{Timeout: time.Minute}
	got, err := v.Verify(context.Background(), Request{Protocol: POP3, Address: srv.Addr, User: "alice", Password: "s3cret"})
	checkResult(t, got, err, Temporary, "s3cret", "")
	if err == nil || !strings.Contains(err.Error(), "CAPA listing too long") {
		t.Errorf("err = %v, want the CAPA listing's bound", err)
	}
}

// A server that accepts and then holds its answer fails the check with
// ErrStalled at the deadline, saying whether it had greeted; a refused
// connection is no stall.
func TestStalledServer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  func(p *peer)
		greeted bool
	}{
		{"before the greeting", func(p *peer) { p.drain() }, false},
		{"after the greeting", func(p *peer) {
			p.send("* OK ready")
			p.drain()
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			v := &Verifier{Timeout: 200 * time.Millisecond}
			got, err := v.Verify(context.Background(), Request{Protocol: IMAP, Address: srv.Addr, User: "alice", Password: "s3cret"})
			e := checkResult(t, got, err, Temporary, "s3cret", "")
			if !errors.Is(err, ErrStalled) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want ErrStalled and context.DeadlineExceeded", err)
			}
			if e != nil && e.Greeted != tc.greeted {
				t.Errorf("Greeted = %v, want %v", e.Greeted, tc.greeted)
			}
			t.Log(err)
		})
	}
	t.Run("refused", func(t *testing.T) {
		v := &Verifier{Timeout: 200 * time.Millisecond}
		_, err := v.Verify(context.Background(), Request{Protocol: IMAP, Address: refusedAddr(t), User: "alice", Password: "s3cret"})
		if errors.Is(err, ErrStalled) {
			t.Errorf("err = %v for a refused connection, want no ErrStalled", err)
		}
	})
	t.Run("TLS handshake", func(t *testing.T) {
		srv := startScript(t, nil, func(p *peer) { p.drain() })
		v := &Verifier{Timeout: 200 * time.Millisecond}
		_, err := v.Verify(context.Background(), Request{Security: SecurityTLS, Protocol: IMAP, Address: srv.Addr, User: "alice", Password: "s3cret"})
		if !errors.Is(err, ErrStalled) {
			t.Errorf("err = %v for a stalled TLS handshake, want ErrStalled", err)
		}
	})
}

// The probe's greeting read has a budget of its own.
func TestReadGreetingBudget(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		defer server.Close()
		// Short lines, each within maxLine, but never the last one.
		for {
			if _, err := io.WriteString(server, "220-"+strings.Repeat("x", 1000)+"\r\n"); err != nil {
				return
			}
		}
	}()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	err := ReadGreeting(client, SMTP)
	if err == nil {
		t.Fatal("ReadGreeting accepted an endless greeting")
	}
	t.Log(err)
}

func TestBudgetConn(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		server.Write(bytes.Repeat([]byte("x"), 100))
		server.Close()
	}()
	c := newBudgetConn(client, 64)
	b, err := io.ReadAll(c)
	if len(b) != 64 || !errors.Is(err, ErrOversized) || !c.exceeded() {
		t.Errorf("read %d bytes, err %v, exceeded %v; want 64, ErrOversized, true", len(b), err, c.exceeded())
	}
}
