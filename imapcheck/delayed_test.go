package imapcheck

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// A server that greets, takes the login and holds its answer (Dovecot's
// auth penalty, a tarpit) gives Delayed, not Temporary: it is up, it just
// will not say yet. A server that stalls before the login stays Temporary,
// and so does a check the caller cancelled.
func TestDelayedLogin(t *testing.T) {
	holdIMAP := func(p *peer) {
		p.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")
		p.drain() // reads LOGIN, never answers
	}
	holdPOP3 := func(p *peer) {
		if !pop3Greet(p, "USER") || !p.expect("USER alice") {
			return
		}
		p.send("+OK")
		p.drain() // reads PASS, never answers
	}
	// With the client's address forwarded, the ID goes out first and the
	// LOGIN behind it: a server that answers the ID and holds the LOGIN
	// delays; one that answers nothing after its greeting has stalled.
	holdIMAPAfterID := func(p *peer) {
		p.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready")
		if !p.expect(`F1 ID ("x-originating-ip" "198.51.100.7")`) {
			return
		}
		p.send(`* ID ("name" "test")`, "F1 OK ID completed")
		p.drain()
	}
	stallIMAPAfterGreeting := func(p *peer) {
		p.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready")
		p.drain() // reads ID and LOGIN, never answers either
	}
	stallCAPA := func(p *peer) {
		p.send("+OK POP3 ready")
		p.drain() // reads CAPA, never answers
	}
	for _, tc := range []struct {
		name    string
		proto   Protocol
		script  func(*peer)
		forward bool
		cancel  bool
		want    Outcome
	}{
		{"imap login held", IMAP, holdIMAP, false, false, Delayed},
		{"pop3 pass held", POP3, holdPOP3, false, false, Delayed},
		{"pop3 capa held", POP3, stallCAPA, false, false, Temporary},
		{"imap login held, caller cancels", IMAP, holdIMAP, false, true, Temporary},
		{"imap login held behind an answered ID", IMAP, holdIMAPAfterID, true, false, Delayed},
		{"imap silent after its greeting, ID unanswered", IMAP, stallIMAPAfterGreeting, true, false, Temporary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			v := &Verifier{Timeout: 300 * time.Millisecond, ForwardClientIP: tc.forward}
			ctx := context.Background()
			if tc.cancel {
				c, cancel := context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
				ctx = c
			}
			req := Request{Protocol: tc.proto, Address: srv.Addr, User: "alice", Password: "s3cret",
				ClientIP: netip.MustParseAddr("198.51.100.7")}
			got, err := v.Verify(ctx, req)
			checkResult(t, got, err, tc.want, "s3cret", "")
			if tc.forward && tc.want == Temporary && !errors.Is(err, ErrStalled) {
				t.Errorf("err = %v, want it to wrap ErrStalled", err)
			}
			if tc.want == Delayed && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
			}
		})
	}
}
