package imapcheck

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// pop3Greet plays a greeting and a CAPA listing the given capabilities.
func pop3Greet(p *peer, caps ...string) bool {
	p.send("+OK POP3 ready")
	if !p.expect("CAPA") {
		return false
	}
	p.send("+OK")
	p.send(caps...)
	p.send(".")
	return true
}

// pop3Quit plays the server's side of QUIT.
func pop3Quit(p *peer) {
	if p.expect("QUIT") {
		// The client does not wait for this answer and may be gone.
		p.sendMaybe("+OK Bye")
	}
}

// pop3PassReply plays USER and PASS, answering PASS with reply.
func pop3PassReply(reply string, quit bool) func(p *peer) {
	return func(p *peer) {
		if !pop3Greet(p, "USER", "SASL PLAIN") || !p.expect("USER alice") {
			return
		}
		p.send("+OK")
		if !p.expect("PASS s3cret") {
			return
		}
		p.send(reply)
		if quit {
			pop3Quit(p)
		} else {
			p.expectEOF()
		}
	}
}

func TestPOP3Scripted(t *testing.T) {
	const plain = "AGFsaWNlAHMzY3JldA==" // "\0alice\0s3cret"
	long := strings.Repeat("u", 200)
	longPlain := base64.StdEncoding.EncodeToString([]byte("\x00" + long + "\x00s3cret"))
	for _, tc := range []struct {
		name      string
		user      string
		script    func(p *peer)
		want      Outcome
		wantReply string
		wantErr   string
	}{
		{name: "ok", script: pop3PassReply("+OK Logged in.", true), want: OK},
		{name: "auth", script: pop3PassReply("-ERR [AUTH] Authentication failed.", true), want: Rejected, wantReply: "-ERR [AUTH] Authentication failed."},
		{name: "bare ERR", script: pop3PassReply("-ERR Invalid login", true), want: Rejected, wantReply: "-ERR Invalid login"},
		{name: "sys temp", script: pop3PassReply("-ERR [SYS/TEMP] Try again later", false), want: Temporary, wantReply: "-ERR [SYS/TEMP] Try again later"},
		{name: "sys perm", script: pop3PassReply("-ERR [SYS/PERM] Database broken", false), want: Temporary, wantReply: "-ERR [SYS/PERM] Database broken"},
		{name: "in use", script: pop3PassReply("-ERR [IN-USE] Mailbox locked", false), want: Temporary, wantReply: "-ERR [IN-USE] Mailbox locked"},
		{name: "login delay", script: pop3PassReply("-ERR [LOGIN-DELAY] Too soon", false), want: Temporary, wantReply: "-ERR [LOGIN-DELAY] Too soon"},
		{name: "password echoed", script: pop3PassReply("-ERR [AUTH] Wrong password s3cret", true), want: Rejected, wantReply: "-ERR [AUTH] Wrong password <redacted>"},
		{
			name: "hang-up after PASS",
			script: func(p *peer) {
				pop3Greet(p, "USER")
				p.expect("USER alice")
				p.send("+OK")
				p.expect("PASS s3cret")
			},
			want:    Temporary,
			wantErr: "PASS: unexpected EOF",
		}, {
			name: "greeting ERR",
			script: func(p *peer) {
				p.send("-ERR [SYS/TEMP] Server busy")
				p.expectEOF()
			},
			want:      Temporary,
			wantReply: "-ERR [SYS/TEMP] Server busy",
		}, {
			name: "no CAPA",
			script: func(p *peer) {
				p.send("+OK POP3 ready")
				p.expect("CAPA")
				p.send("-ERR Unknown command")
				p.expect("USER alice")
				p.send("+OK")
				p.expect("PASS s3cret")
				p.send("+OK")
				pop3Quit(p)
			},
			want: OK,
		}, {
			name: "AUTH PLAIN",
			script: func(p *peer) {
				pop3Greet(p, "SASL PLAIN LOGIN", "TOP")
				p.expect("AUTH PLAIN " + plain)
				p.send("+OK Logged in.")
				pop3Quit(p)
			},
			want: OK,
		}, {
			name: "AUTH PLAIN, initial response ignored",
			script: func(p *peer) {
				pop3Greet(p, "SASL LOGIN PLAIN")
				p.expect("AUTH PLAIN " + plain)
				p.send("+ ")
				p.expect(plain)
				p.send("-ERR [AUTH] Authentication failed.")
				pop3Quit(p)
			},
			want:      Rejected,
			wantReply: "-ERR [AUTH] Authentication failed.",
		}, {
			name: "AUTH PLAIN, too long for an initial response",
			user: long,
			script: func(p *peer) {
				pop3Greet(p, "SASL PLAIN")
				p.expect("AUTH PLAIN")
				p.send("+")
				p.expect(longPlain)
				p.send("+OK")
				pop3Quit(p)
			},
			want: OK,
		}, {
			name: "AUTH PLAIN, endless challenges",
			script: func(p *peer) {
				pop3Greet(p, "SASL PLAIN")
				p.expect("AUTH PLAIN " + plain)
				p.send("+ ")
				p.expect(plain)
				p.send("+ more")
				p.expect("*")
				p.send("-ERR Cancelled")
				p.expectEOF()
			},
			want:    Temporary,
			wantErr: "more than one response",
		}, {
			name: "strict plaintext port",
			script: func(p *peer) {
				pop3Greet(p, "CAPA", "TOP", "STLS", "SASL", "IMPLEMENTATION Dovecot")
				pop3Quit(p) // and not USER
			},
			want:    Unsupported,
			wantErr: "neither USER nor SASL PLAIN",
		}, {
			name: "line too long",
			script: func(p *peer) {
				p.send("+OK " + strings.Repeat("x", 5000))
				p.drain()
			},
			want:    Temporary,
			wantErr: "longer than 4 KiB",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := tc.user
			if user == "" {
				user = "alice"
			}
			srv := startScript(t, nil, tc.script)
			var debug syncBuffer
			v := &Verifier{Debug: &debug, Timeout: 5 * time.Second}
			got, err := v.Verify(context.Background(), Request{Protocol: POP3, Address: srv.Addr, User: user, Password: "s3cret"})
			srv.wait()
			e := checkResult(t, got, err, tc.want, "s3cret", debug.String())
			if e != nil && e.Reply != tc.wantReply {
				t.Errorf("Reply = %q, want %q", e.Reply, tc.wantReply)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			t.Logf("%v\n%s", err, debug.String())
		})
	}
}

// The whole conversation, as the debug transcript shows it.
func TestPOP3Transcript(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(p *peer)
		want   string
	}{{
		name:   "USER PASS",
		script: pop3PassReply("+OK Logged in.", true),
		want: `S: +OK POP3 ready
C: CAPA
S: +OK
S: USER
S: SASL PLAIN
S: .
C: USER alice
S: +OK
C: PASS <redacted>
S: +OK Logged in.
C: QUIT
`,
	}, {
		name: "AUTH PLAIN with continuation",
		script: func(p *peer) {
			pop3Greet(p, "SASL PLAIN")
			p.expect("AUTH PLAIN AGFsaWNlAHMzY3JldA==")
			p.send("+ ")
			p.expect("AGFsaWNlAHMzY3JldA==")
			p.send("+OK Logged in.")
			pop3Quit(p)
		},
		want: `S: +OK POP3 ready
C: CAPA
S: +OK
S: SASL PLAIN
S: .
C: AUTH PLAIN <redacted>
S: + 
C: <redacted>
S: +OK Logged in.
C: QUIT
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			var debug syncBuffer
			v := &Verifier{Debug: &debug, Timeout: 5 * time.Second}
			got, err := v.Verify(context.Background(), Request{Protocol: POP3, Address: srv.Addr, User: "alice", Password: "s3cret"})
			srv.wait()
			checkResult(t, got, err, OK, "s3cret", debug.String())
			if got := withoutTimes(debug.String()); got != tc.want {
				t.Errorf("transcript:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestPOP3TLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	stls := func(p *peer) {
		if !pop3Greet(p, "STLS", "SASL") || !p.expect("STLS") {
			return
		}
		p.send("+OK Begin TLS negotiation now.")
		if !p.startTLS(ca.Server) || !p.expect("CAPA") {
			return
		}
		p.send("+OK", "USER", "SASL PLAIN", ".")
		p.expect("USER alice")
		p.send("+OK")
		p.expect("PASS s3cret")
		p.send("+OK Logged in.")
		pop3Quit(p)
	}
	implicit := pop3PassReply("+OK Logged in.", true)
	for _, tc := range []struct {
		name      string
		security  Security
		roots     *testCA
		serverTLS *tls.Config // implicit TLS
		script    func(p *peer)
		want      Outcome
		wantReply string
	}{
		{name: "stls", security: SecurityStartTLS, roots: ca, script: stls, want: OK},
		{name: "tls", security: SecurityTLS, roots: ca, serverTLS: ca.Server, script: implicit, want: OK},
		{
			name: "stls untrusted", security: SecurityStartTLS, roots: other, want: Temporary,
			script: func(p *peer) {
				pop3Greet(p, "STLS")
				p.expect("STLS")
				p.send("+OK Begin TLS negotiation now.")
				tls.Server(p.conn, ca.Server).Handshake() // fails: the client hangs up
			},
		},
		{
			name: "tls untrusted", security: SecurityTLS, roots: other, serverTLS: ca.Server, want: Temporary,
			script: func(p *peer) { p.conn.(*tls.Conn).Handshake() },
		},
		{
			name: "stls refused", security: SecurityStartTLS, roots: ca, want: Unsupported, wantReply: "-ERR Unknown command",
			script: func(p *peer) {
				pop3Greet(p, "USER")
				p.expect("STLS")
				p.send("-ERR Unknown command")
				p.expectEOF()
			},
		},
		{
			name: "data injected before TLS", security: SecurityStartTLS, roots: ca, want: Temporary,
			script: func(p *peer) {
				pop3Greet(p, "STLS")
				p.expect("STLS")
				p.send("+OK Begin TLS negotiation now.", "+OK injected")
				p.drain()
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, tc.serverTLS, tc.script)
			var debug syncBuffer
			v := &Verifier{TLSConfig: tc.roots.client(), Debug: &debug, Timeout: 5 * time.Second}
			got, err := v.Verify(context.Background(), Request{Security: tc.security, Protocol: POP3, Address: srv.Addr, User: "alice", Password: "s3cret"})
			srv.wait()
			e := checkResult(t, got, err, tc.want, "s3cret", debug.String())
			if e != nil && e.Reply != tc.wantReply {
				t.Errorf("Reply = %q, want %q", e.Reply, tc.wantReply)
			}
			if tc.roots == other {
				var cv *tls.CertificateVerificationError
				if !errors.As(err, &cv) || !errors.Is(err, ErrUntrustedCertificate) {
					t.Errorf("err = %v, want a certificate verification error", err)
				}
			}
			t.Logf("%v\n%s", err, debug.String())
		})
	}
}

func TestPOP3NeverGreets(t *testing.T) {
	srv := startScript(t, nil, func(p *peer) { p.drain() })
	v := &Verifier{Timeout: 200 * time.Millisecond}
	start := time.Now()
	got, err := v.Verify(context.Background(), Request{Protocol: POP3, Address: srv.Addr, User: "alice", Password: "s3cret"})
	elapsed := time.Since(start)
	checkResult(t, got, err, Temporary, "s3cret", "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("Verify took %v with a 200ms timeout", elapsed)
	}
	t.Logf("%v after %v", err, elapsed)
}
