package imapcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// oddPassword has what a quoted string must escape or cannot hold in ASCII.
const oddPassword = `pä ss%+"\wörd`

// startMemServer runs go-imap's in-memory server with users alice/s3cret and
// bob/oddPassword. A non-nil tlsConfig enables STARTTLS, or, with implicit,
// TLS from the first byte.
func startMemServer(t testing.TB, tlsConfig *tls.Config, implicit, insecureAuth bool) string {
	t.Helper()
	mem := imapmemserver.New()
	mem.AddUser(imapmemserver.NewUser("alice", "s3cret"))
	mem.AddUser(imapmemserver.NewUser("bob", oddPassword))
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}},
		TLSConfig:    tlsConfig,
		InsecureAuth: insecureAuth,
		Logger:       log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if implicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return addr
}

func TestIMAPMemServer(t *testing.T) {
	addr := startMemServer(t, nil, false, true)
	for _, tc := range []struct {
		name, user, password string
		want                 Outcome
	}{
		{"ok", "alice", "s3cret", OK},
		{"wrong password", "alice", "wrong", Rejected},
		{"unknown user", "carol", "s3cret", Rejected},
		{"odd password", "bob", oddPassword, OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var debug syncBuffer
			v := &Verifier{Debug: &debug}
			got, err := v.Verify(context.Background(), Request{Protocol: IMAP, Address: addr, User: tc.user, Password: tc.password})
			e := checkResult(t, got, err, tc.want, tc.password, debug.String())
			if tc.want == Rejected && !strings.Contains(e.Reply, "AUTHENTICATIONFAILED") {
				t.Errorf("Reply = %q, want AUTHENTICATIONFAILED", e.Reply)
			}
			if !strings.Contains(debug.String(), "C: T1 LOGIN <redacted>\n") {
				t.Errorf("transcript has no redacted LOGIN:\n%s", debug.String())
			}
			t.Logf("%v\n%s", err, debug.String())
		})
	}
}

// Without TLS and without InsecureAuth, go-imap's server advertises
// LOGINDISABLED and no AUTH= mechanism.
func TestIMAPLoginDisabled(t *testing.T) {
	addr := startMemServer(t, nil, false, false)
	var debug syncBuffer
	v := &Verifier{Debug: &debug}
	got, err := v.Verify(context.Background(), Request{Protocol: IMAP, Address: addr, User: "alice", Password: "s3cret"})
	checkResult(t, got, err, Unsupported, "s3cret", debug.String())
	if strings.Contains(debug.String(), "<redacted>") {
		t.Errorf("credentials were sent:\n%s", debug.String())
	}
	t.Log(err)
}

func TestIMAPTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	for _, tc := range []struct {
		name     string
		security Security
		roots    *testCA
		password string
		want     Outcome
	}{
		{"starttls ok", SecurityStartTLS, ca, "s3cret", OK},
		{"starttls wrong password", SecurityStartTLS, ca, "wrong", Rejected},
		{"tls ok", SecurityTLS, ca, "s3cret", OK},
		{"starttls untrusted", SecurityStartTLS, other, "s3cret", Temporary},
		{"tls untrusted", SecurityTLS, other, "s3cret", Temporary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// InsecureAuth false: a login only works if TLS is really on.
			addr := startMemServer(t, ca.Server, tc.security == SecurityTLS, false)
			var debug syncBuffer
			v := &Verifier{TLSConfig: tc.roots.client(), Debug: &debug}
			got, err := v.Verify(context.Background(), Request{Security: tc.security, Protocol: IMAP, Address: addr, User: "alice", Password: tc.password})
			checkResult(t, got, err, tc.want, tc.password, debug.String())
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

// imapLogout plays the server's side of LOGOUT with the given tag.
func imapLogout(p *peer, tag string) {
	if p.expect(tag + " LOGOUT") {
		// The client does not wait for this answer and may be gone.
		p.sendMaybe("* BYE Logging out", tag+" OK Logout completed.")
	}
}

func TestIMAPScripted(t *testing.T) {
	const greeting = "* OK [CAPABILITY IMAP4rev1] ready"
	for _, tc := range []struct {
		name      string
		password  string
		script    func(p *peer)
		want      Outcome
		wantReply string
		wantErr   string
	}{{
		name: "BYE greeting",
		script: func(p *peer) {
			p.send("* BYE Too many connections")
			p.expectEOF()
		},
		want:      Temporary,
		wantReply: "BYE Too many connections",
	}, {
		name: "unavailable",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 NO [UNAVAILABLE] Backend down")
			p.expectEOF()
		},
		want:      Temporary,
		wantReply: "NO [UNAVAILABLE] Backend down",
	}, {
		name: "bare NO",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 NO Login failed")
			imapLogout(p, "T2")
		},
		want:      Rejected,
		wantReply: "NO Login failed",
	}, {
		name: "authentication failed",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 NO [AUTHENTICATIONFAILED] Authentication failed.")
			imapLogout(p, "T2")
		},
		want:      Rejected,
		wantReply: "NO [AUTHENTICATIONFAILED] Authentication failed.",
	}, {
		name: "privacy required",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 NO [PRIVACYREQUIRED] Use TLS")
			imapLogout(p, "T2")
		},
		want:      Unsupported,
		wantReply: "NO [PRIVACYREQUIRED] Use TLS",
		wantErr:   "STARTTLS or TLS",
	}, {
		name: "BAD",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 BAD Syntax error")
			p.expectEOF()
		},
		want:      Temporary,
		wantReply: "BAD Syntax error",
	}, {
		name: "hang-up mid-login",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
		},
		want:    Temporary,
		wantErr: "LOGIN: unexpected EOF",
	}, {
		name: "PREAUTH",
		script: func(p *peer) {
			p.send("* PREAUTH [CAPABILITY IMAP4rev1] welcome")
			p.expectEOF()
		},
		want:      Unsupported,
		wantReply: "PREAUTH [CAPABILITY IMAP4rev1] welcome",
	}, {
		name: "capabilities asked for",
		script: func(p *peer) {
			p.send("* OK ready")
			p.expect("T1 CAPABILITY")
			p.send("* CAPABILITY IMAP4rev1 LITERAL+", "T1 OK done")
			p.expect(`T2 LOGIN "alice" "s3cret"`)
			p.send("T2 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T3")
		},
		want: OK,
	}, {
		name: "login OK without capabilities",
		script: func(p *peer) {
			p.send(greeting)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 OK Logged in")
			// imapclient asks for the capabilities again, from a
			// goroutine of its own, racing our LOGOUT: it may come
			// before or after LOGOUT, or not at all.
			for {
				line, err := p.r.ReadString('\n')
				if err != nil {
					break
				}
				tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
				switch cmd {
				case "CAPABILITY":
					// The client may have hung up already, after
					// LOGOUT: a failed write is no failure here.
					io.WriteString(p.conn, "* CAPABILITY IMAP4rev1\r\n"+tag+" OK done\r\n")
				case "LOGOUT":
					p.sendMaybe("* BYE Logging out", tag+" OK Logout completed.")
				default:
					p.t.Errorf("server: unexpected %q", line)
				}
			}
		},
		want: OK,
	}, {
		name: "LOGINDISABLED with AUTH=PLAIN",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN SASL-IR] ready")
			p.expect("T1 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==")
			p.send("T1 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T2")
		},
		want: OK,
	}, {
		name: "LOGINDISABLED with AUTH=PLAIN, no SASL-IR",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] ready")
			p.expect("T1 AUTHENTICATE PLAIN")
			p.send("+ ")
			p.expect("AGFsaWNlAHMzY3JldA==")
			p.send("T1 NO [AUTHENTICATIONFAILED] Authentication failed.")
			imapLogout(p, "T2")
		},
		want:      Rejected,
		wantReply: "NO [AUTHENTICATIONFAILED] Authentication failed.",
	}, {
		name: "LOGINDISABLED alone",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED STARTTLS] ready")
			imapLogout(p, "T1")
		},
		want:    Unsupported,
		wantErr: "LOGINDISABLED",
	}, {
		name:     "CR LF in password go as a literal",
		password: "pa\r\nss",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 LITERAL+] ready")
			p.expect(`T1 LOGIN "alice" {6+}`)
			p.expect("pa")
			p.expect("ss")
			p.send("T1 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T2")
		},
		want: OK,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			password := tc.password
			if password == "" {
				password = "s3cret"
			}
			srv := startScript(t, nil, tc.script)
			var debug syncBuffer
			v := &Verifier{Debug: &debug, Timeout: 5 * time.Second}
			got, err := v.Verify(context.Background(), Request{Protocol: IMAP, Address: srv.Addr, User: "alice", Password: password})
			srv.wait() // the script's complaints belong to this test
			e := checkResult(t, got, err, tc.want, password, debug.String())
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

// A server that never greets must not hold a check past its timeout.
func TestIMAPNeverGreets(t *testing.T) {
	for _, sec := range []Security{SecurityNone, SecurityStartTLS} {
		t.Run(string(sec), func(t *testing.T) {
			srv := startScript(t, nil, func(p *peer) { p.drain() })
			v := &Verifier{Timeout: 200 * time.Millisecond}
			start := time.Now()
			got, err := v.Verify(context.Background(), Request{Security: sec, Protocol: IMAP, Address: srv.Addr, User: "alice", Password: "s3cret"})
			elapsed := time.Since(start)
			checkResult(t, got, err, Temporary, "s3cret", "")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
			}
			if elapsed > 2*time.Second {
				t.Errorf("Verify took %v with a 200ms timeout", elapsed)
			}
			t.Logf("%v after %v", err, elapsed)
		})
	}
}

// The caller's context bounds the check as well as Timeout does.
func TestIMAPContextCancel(t *testing.T) {
	srv := startScript(t, nil, func(p *peer) { p.drain() })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	v := &Verifier{}
	start := time.Now()
	got, err := v.Verify(ctx, Request{Protocol: IMAP, Address: srv.Addr, User: "alice", Password: "s3cret"})
	checkResult(t, got, err, Temporary, "s3cret", "")
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Verify took %v with a 100ms context", elapsed)
	}
}

func TestIMAPStartTLSScripted(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name      string
		script    func(p *peer)
		want      Outcome
		wantReply string
	}{{
		name: "ok",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready")
			p.expect("S1 STARTTLS")
			p.send("S1 OK Begin TLS negotiation now.")
			if !p.startTLS(ca.Server) {
				return
			}
			p.expect("T1 CAPABILITY")
			p.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN", "T1 OK done")
			p.expect(`T2 LOGIN "alice" "s3cret"`)
			p.send("T2 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T3")
		},
		want: OK,
	}, {
		name: "BYE greeting",
		script: func(p *peer) {
			p.send("* BYE Too many connections")
			p.expectEOF()
		},
		want:      Temporary,
		wantReply: "BYE Too many connections",
	}, {
		name: "STARTTLS refused",
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1] ready")
			p.expect("S1 STARTTLS")
			p.send("S1 BAD Unknown command")
			p.expectEOF()
		},
		want:      Unsupported,
		wantReply: "BAD Unknown command",
	}, {
		name: "data injected before TLS",
		script: func(p *peer) {
			p.send("* OK ready")
			p.expect("S1 STARTTLS")
			p.send("S1 OK Begin TLS negotiation now.\r\n* OK [CAPABILITY IMAP4rev1] injected")
			p.drain()
		},
		want: Temporary,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			var debug syncBuffer
			v := &Verifier{TLSConfig: ca.client(), Debug: &debug, Timeout: 5 * time.Second}
			got, err := v.Verify(context.Background(), Request{Security: SecurityStartTLS, Protocol: IMAP, Address: srv.Addr, User: "alice", Password: "s3cret"})
			srv.wait()
			e := checkResult(t, got, err, tc.want, "s3cret", debug.String())
			if e != nil && e.Reply != tc.wantReply {
				t.Errorf("Reply = %q, want %q", e.Reply, tc.wantReply)
			}
			t.Logf("%v\n%s", err, debug.String())
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	addr := refusedAddr(t)
	for _, p := range []Protocol{IMAP, POP3} {
		t.Run(string(p), func(t *testing.T) {
			v := &Verifier{}
			got, err := v.Verify(context.Background(), Request{Protocol: p, Address: addr, User: "alice", Password: "s3cret"})
			checkResult(t, got, err, Temporary, "s3cret", "")
			t.Log(err)
		})
	}
}
