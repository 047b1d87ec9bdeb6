package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// TestWrongPasswordNeverProxied (scenario c): a wrong password is refused
// by imapgate before nginx opens a session. The client reads imapgate's
// text, and Dovecot's own log shows exactly one failed attempt for the user
// (imapgate's check) and no login at all.
func TestWrongPasswordNeverProxied(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	// A Dovecot of its own, so that its log holds this scenario's logins
	// only (other scenarios log in as the same users in parallel).
	a := startIsolatedBackend(t, "mailhost12", ipMailhost12, false)
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost12=imap://" + ipMailhost12 + ":143,pop3://" + ipMailhost12 + ":110",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost12",
	})
	for _, tc := range []struct{ proto, user string }{{"imap", "dave"}, {"pop3", "erin"}} {
		t.Run(tc.proto, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t, 90*time.Second)
			wrong := gw.AddSecret(e.Password("mailhost02", tc.user) + "-wrong")
			offset := a.LogOffset()
			from := gw.Imapgate.Len()
			var err error
			if tc.proto == "imap" {
				err = imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, tc.user, wrong)
			} else {
				err = pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, tc.user, wrong, false)
			}
			checkLogin(t, tc.proto, login{user: tc.user, pass: wrong}, err, invalidText)

			rec, err := gw.WaitLogin(ctx, from, tc.user, tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Get("outcome") != "rejected" || rec.Get("backend") != "mailhost12" {
				t.Errorf("imapgate logged outcome=%q backend=%q, want rejected on mailhost12", rec.Get("outcome"), rec.Get("backend"))
			}
			// Dovecot logs after it answers; wait for the failure, then for
			// a login of our own as a barrier, so every line the refused
			// session could have caused is in the log.
			mismatch := "(" + tc.user + ","
			if _, err := a.WaitLog(ctx, offset, func(l string) bool {
				return strings.Contains(l, mismatch) && strings.Contains(l, "Password mismatch")
			}); err != nil {
				t.Fatal(err)
			}
			barrier := "bob"
			if err := imapLogin(ctx, e.ClientDialer(), a.IMAPAddr(), barrier, e.Password("mailhost02", barrier)); err != nil {
				t.Fatalf("barrier login on mailhost12: %v", err)
			}
			if _, err := a.WaitLog(ctx, offset, func(l string) bool { return strings.Contains(l, "Login: user=<"+barrier+">") }); err != nil {
				t.Fatal(err)
			}
			var failures, logins int
			for _, l := range a.LogSince(offset) {
				if strings.Contains(l, mismatch) && strings.Contains(l, "Password mismatch") {
					failures++
				}
				if strings.Contains(l, "Login: user=<"+tc.user+">") {
					logins++
				}
			}
			if failures != 1 || logins != 0 {
				t.Errorf("Dovecot logged %d failed attempts and %d logins for %s; want 1 (imapgate's check) and 0 (nothing proxied):\n%s",
					failures, logins, tc.user, strings.Join(a.LogSince(offset), "\n"))
			}
		})
	}
}

// TestSMTPWrongPasswordRelaysNothing (scenario d): SMTP AUTH with a wrong
// password gets 535 and nothing reaches the relay; with the right password
// the message arrives at the user's backend's SMTP port.
func TestSMTPWrongPasswordRelaysNothing(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	gw := startGateway(t, seedSettings())
	ctx := ctxFor(t, 90*time.Second)
	token := fmt.Sprintf("wrong-%d", time.Now().UnixNano())
	wrong := gw.AddSecret(e.Password("mailhost01", "alice") + "x")
	err := smtpSend(ctx, e.ClientDialer(), gw.SMTPAddr, "alice", wrong, "alice+"+token+"@example.test", "bob@example.test", token)
	if err == nil {
		t.Fatal("SMTP with a wrong password sent the message")
	}
	if !strings.Contains(err.Error(), "535") || !strings.Contains(err.Error(), invalidText) {
		t.Errorf("SMTP wrong password: %v, want 535 … %s", err, invalidText)
	}
	if ms := e.Relay.Messages(token); len(ms) != 0 {
		t.Errorf("the relay received %d messages after a wrong password: %+v", len(ms), ms)
	}

	token = fmt.Sprintf("right-%d", time.Now().UnixNano())
	if err := smtpSend(ctx, e.ClientDialer(), gw.SMTPAddr, "alice", e.Password("mailhost01", "alice"),
		"alice+"+token+"@example.test", "bob@example.test", token); err != nil {
		t.Fatalf("SMTP with the right password: %v", err)
	}
	m, err := e.Relay.WaitMessage(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if want := harness.IPMailhost01 + ":25"; m.Addr != want {
		t.Errorf("message relayed by %s, want alice's backend %s", m.Addr, want)
	}
	if len(m.To) != 1 || m.To[0] != "bob@example.test" {
		t.Errorf("relayed envelope recipients %q", m.To)
	}
}

// specialAccounts are the users whose passwords hold the bytes nginx
// escapes or passes raw: '%', space, '+', '"', UTF-8, and a mix. Each comes
// with near-misses that a wrong decoding would accept.
var specialAccounts = []struct {
	user       string
	nearMisses []string
}{
	{"percent", []string{"100%25-sure%2541%25", "100%-sureA%"}},
	{"space", []string{"two  spaces inside", " two spaces inside "}},
	{"plus", []string{"a b c= plus ", "a%2Bb%2Bc=%2Bplus%2B"}},
	{"quote", []string{`say hi to \ me`, `say \"hi\" to \ me`}},
	{"utf8", []string{"passwort-日本-✓", "pa\u0308sswo\u0308rd-日本-✓"}},
	{"mixed", []string{`++ "Ünï"  \x`, `%2B+ "Uni" %20\x`}},
}

// TestSpecialCharacterPasswords (scenario e): the special-character
// passwords log in through nginx over IMAP and POP3 (USER/PASS and AUTH
// PLAIN) and SMTP, and their near-misses are refused.
func TestSpecialCharacterPasswords(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	gw := startGateway(t, seedSettings())
	var logins []login
	for _, a := range specialAccounts {
		pass := e.Password("mailhost02", a.user)
		spaces := strings.Contains(pass, "  ") || strings.TrimSpace(pass) != pass
		logins = append(logins, login{a.user, pass, true, spaces})
		for _, nm := range a.nearMisses {
			logins = append(logins, login{a.user, nm, false, false})
		}
	}
	tryAll(t, gw, logins, invalidText)
	// POP3 AUTH PLAIN and SMTP AUTH PLAIN carry the password base64-encoded,
	// spaces and all.
	var wg sync.WaitGroup
	errs := make([][2]error, len(specialAccounts))
	tokens := make([]string, len(specialAccounts))
	ctx := ctxFor(t, 2*time.Minute)
	for i, a := range specialAccounts {
		tokens[i] = fmt.Sprintf("special-%s-%d", a.user, time.Now().UnixNano())
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs[i][0] = pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, a.user, e.Password("mailhost02", a.user), true)
		}()
		go func() {
			defer wg.Done()
			errs[i][1] = smtpSend(ctx, e.ClientDialer(), gw.SMTPAddr, a.user, e.Password("mailhost02", a.user),
				a.user+"@example.test", "bob@example.test", tokens[i])
		}()
	}
	wg.Wait()
	for i, a := range specialAccounts {
		t.Run("pop3-auth-plain/"+a.user, func(t *testing.T) {
			if errs[i][0] != nil {
				t.Errorf("POP3 AUTH PLAIN: %v", errs[i][0])
			}
		})
		t.Run("smtp/"+a.user, func(t *testing.T) {
			if errs[i][1] != nil {
				t.Fatalf("SMTP AUTH PLAIN: %v", errs[i][1])
			}
			if _, err := e.Relay.WaitMessage(ctx, tokens[i]); err != nil {
				t.Fatal(err)
			}
		})
	}
}
