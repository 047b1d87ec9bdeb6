package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// TestBackendDownIsTemporary (scenario f): with the user's backend stopped,
// a login gets imapgate's temporary failure over IMAP, POP3 and SMTP (not
// "invalid login", and not counted as a failed login); once the backend is
// back, the same imapgate lets the user in without a restart.
func TestBackendDownIsTemporary(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: the harness cannot stop an external backend")
	}
	ctx := ctxFor(t, 3*time.Minute)
	be, err := e.StartExtraBackend(ctx, "mailhost03", harness.IPMailhost03, "mailhost02")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost03=" + harness.IPMailhost03,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost03",
		"IMAPGATE_VERIFY_TIMEOUT":  "3s",
		"IMAPGATE_PROBE_INTERVAL":  "1s",
	})
	pass := e.Password("mailhost02", "bob")
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "bob", pass); err != nil {
		t.Fatalf("login before the outage: %v", err)
	}
	if err := be.Stop(); err != nil {
		t.Fatalf("stop mailhost03: %v", err)
	}
	// dave has not logged in yet, so no cached success can answer for him.
	davePass := e.Password("mailhost02", "dave")
	from := gw.Imapgate.Len()
	checkLogin(t, "imap", login{user: "dave", pass: davePass}, imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "dave", davePass), temporaryText)
	checkLogin(t, "pop3", login{user: "dave", pass: davePass}, pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, "dave", davePass, false), temporaryText)
	err = smtpSend(ctx, e.ClientDialer(), gw.SMTPAddr, "dave", davePass, "dave@example.test", "bob@example.test", "outage")
	if err == nil || !strings.Contains(err.Error(), "451") || !strings.Contains(err.Error(), temporaryText) {
		t.Errorf("SMTP during the outage: %v, want 451 … %s", err, temporaryText)
	}
	rec, err := gw.WaitLogin(ctx, from, "dave", "imap")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Get("outcome") != "temporary" {
		t.Errorf("imapgate logged outcome=%q for a stopped backend, want temporary", rec.Get("outcome"))
	}

	restarted := gw.Imapgate.Len()
	if err := be.Start(ctx); err != nil {
		t.Fatalf("restart mailhost03: %v", err)
	}
	// imapgate answers "temporary" at once while its health probe last saw
	// the backend down; wait for the probe to see it back (signal: its
	// msg="backend up" lines), at most a few probe intervals.
	for _, proto := range []string{"imap", "pop3"} {
		upCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, _, err := gw.Imapgate.WaitLine(upCtx, restarted, func(line string) bool {
			r := harness.LoginRecord(harness.ParseLogLine(line))
			return r.Get("msg") == "backend up" && r.Get("backend") == "mailhost03" && r.Get("protocol") == proto
		})
		cancel()
		if err != nil {
			t.Errorf("imapgate did not log that mailhost03 (%s) is back: %v", proto, err)
		}
	}
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "dave", davePass); err != nil {
		t.Errorf("IMAP login after the backend came back: %v", err)
	}
	if err := pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, "dave", davePass, false); err != nil {
		t.Errorf("POP3 login after the backend came back: %v", err)
	}
}

// TestVerifyOverTLS (scenario g): imapgate checks passwords over implicit
// TLS (993/995) or STARTTLS (143/110) against Dovecot's own listeners,
// trusting the run's test CA; nginx still proxies in plain TCP. With a CA
// that did not sign the backends' certificates, logins fail temporarily.
func TestVerifyOverTLS(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.CAFile == "" {
		t.Skip("external mode without " + harness.EnvCAFile)
	}
	otherCA, err := harness.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := filepath.Join(t.TempDir(), "wrong-ca.crt")
	if err := otherCA.WriteCert(wrongCA); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode, ca string
		imapUser string // on mailhost01
		pop3User string // on mailhost02
		wantOK   bool
	}{
		{"tls", e.CAFile, "alice", "bob", true},
		{"starttls", e.CAFile, "carol", "dave", true},
		{"tls", wrongCA, "frank", "erin", false},
		{"starttls", wrongCA, "gina", "amy", false},
	} {
		name := tc.mode + map[bool]string{true: "/test-ca", false: "/wrong-ca"}[tc.wantOK]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t, 2*time.Minute)
			settings := seedSettings()
			settings["IMAPGATE_VERIFY_TLS"] = tc.mode
			settings["IMAPGATE_VERIFY_CA_FILE"] = tc.ca
			// amy starts with a: route her by a users file instead.
			settings["IMAPGATE_FIRST_LETTER"] = "cfg=mailhost01"
			settings["IMAPGATE_BACKENDS"] = fmt.Sprintf("mailhost01=%s;mailhost02=%s;alice=%s", harness.IPMailhost01, harness.IPMailhost02, harness.IPMailhost01)
			settings["IMAPGATE_USERS_FILE"] = writeFile(t, "users", "alice alice\n")
			gw := startGateway(t, settings)
			a := e.Backends["mailhost01"]
			offset := a.LogOffset()
			imapPass := e.Password("mailhost01", tc.imapUser)
			pop3Pass := e.Password("mailhost02", tc.pop3User)
			want := ""
			if !tc.wantOK {
				want = temporaryText
			}
			checkLogin(t, "imap", login{user: tc.imapUser, pass: imapPass, ok: tc.wantOK},
				imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, tc.imapUser, imapPass), want)
			checkLogin(t, "pop3", login{user: tc.pop3User, pass: pop3Pass, ok: tc.wantOK},
				pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, tc.pop3User, pop3Pass, false), want)
			if tc.wantOK && a.LogPath != "" {
				// nginx logs in without TLS; a TLS login of the user is
				// imapgate's check.
				if _, err := a.WaitLog(ctx, offset, func(l string) bool {
					return strings.Contains(l, "Login: user=<"+tc.imapUser+">") && strings.Contains(l, "TLS")
				}); err != nil {
					t.Errorf("Dovecot saw no TLS login of %s: %v", tc.imapUser, err)
				}
			}
		})
	}
}

// TestUsersFileReload (scenario h): the users file is edited while imapgate
// runs (written aside and renamed over, as editors and config tools do),
// and routing follows without a restart.
func TestUsersFileReload(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	users := writeFile(t, "users", "sam mailhost01\nerin mailhost01\n")
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":   fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_USERS_FILE": users,
	})
	ctx := ctxFor(t, 2*time.Minute)
	sam := e.Password("mailhost01", "sam") // the same on both hosts
	erin := e.Password("mailhost02", "erin")
	checkAuthServer(t, gw, "imap", "sam", sam, harness.IPMailhost01, "143")
	checkLogin(t, "imap", login{user: "erin", pass: erin}, imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "erin", erin), invalidText)

	tmp := users + ".new"
	if err := os.WriteFile(tmp, []byte("sam mailhost02\nerin mailhost02\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, users); err != nil {
		t.Fatal(err)
	}
	// Wait for the reload by its effect: sam (right password on both
	// hosts, so no failed attempts pile up) moves to mailhost02.
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, err := gw.AuthRequest(ctx, "imap", "sam", sam, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.Get("Auth-Server") == harness.IPMailhost02 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the users file changed, sam still routes to %q", h.Get("Auth-Server"))
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "erin", erin); err != nil {
		t.Errorf("IMAP login of erin after the reload: %v", err)
	}
	if err := pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, "erin", erin, false); err != nil {
		t.Errorf("POP3 login of erin after the reload: %v", err)
	}
}

// writeFile writes content to a new file in the test's temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
