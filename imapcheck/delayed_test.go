package imapcheck

import (
	"context"
	"errors"
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
	stallCAPA := func(p *peer) {
		p.send("+OK POP3 ready")
		p.drain() // reads CAPA, never answers
	}
	for _, tc := range []struct {
		name   string
		proto  Protocol
		script func(*peer)
		cancel bool
		want   Outcome
	}{
		{"imap login held", IMAP, holdIMAP, false, Delayed},
		{"pop3 pass held", POP3, holdPOP3, false, Delayed},
		{"pop3 capa held", POP3, stallCAPA, false, Temporary},
		{"imap login held, caller cancels", IMAP, holdIMAP, true, Temporary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			v := &Verifier{Timeout: 300 * time.Millisecond}
			ctx := context.Background()
			if tc.cancel {
				c, cancel := context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
				ctx = c
			}
			got, err := v.Verify(ctx, Request{Protocol: tc.proto, Address: srv.Addr, User: "alice", Password: "s3cret"})
			checkResult(t, got, err, tc.want, "s3cret", "")
			if tc.want == Delayed && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
			}
		})
	}
}
