package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// The texts nginx shows the client, straight from imapgate's Auth-Status.
const (
	invalidText   = "Invalid login or password"
	temporaryText = "Temporary server problem, try again later"
	// throttledText answers a login the guessing limits refused without
	// asking the backend: not called wrong, since it was not checked.
	throttledText = "Too many failed logins, try again later"
)

// refused reports whether an IMAP error's text is one of imapgate's
// refusals of a guess: a wrong password, throttled, or try later.
func refused(err error) bool {
	switch imapErrorText(err) {
	case invalidText, throttledText, temporaryText:
		return true
	}
	return false
}

// login is one login a scenario tries through nginx, and what must happen.
type login struct {
	user, pass string
	ok         bool
	// noPOP3User skips POP3 USER/PASS: nginx's POP3 parser splits the PASS
	// argument on spaces, so a password with leading or repeated spaces
	// cannot pass through it that way (AUTH PLAIN is tested instead).
	noPOP3User bool
}

// tryAll logs in over IMAP and POP3 through gw for each login and checks
// the outcome (and, for failures, the text the client read). The logins run
// all at once in goroutines (a refused one waits out nginx's Auth-Wait, and
// go test runs only GOMAXPROCS parallel tests); each is then reported as a
// subtest of its own.
func tryAll(t *testing.T, gw *harness.Gateway, logins []login, wantText string) {
	t.Helper()
	e := requireEnv(t)
	type attempt struct {
		name, proto string
		l           login
		err         error
	}
	var attempts []*attempt
	for _, l := range logins {
		gw.AddSecret(l.pass)
		for _, proto := range []string{"imap", "pop3"} {
			if proto == "pop3" && l.noPOP3User {
				continue
			}
			name := proto + "/" + l.user + "/" + map[bool]string{true: "right", false: "refused"}[l.ok]
			attempts = append(attempts, &attempt{name: name, proto: proto, l: l})
		}
	}
	ctx := ctxFor(t, 2*time.Minute)
	var wg sync.WaitGroup
	for _, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a.proto == "imap" {
				a.err = imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, a.l.user, a.l.pass)
			} else {
				a.err = pop3Login(ctx, e.ClientDialer(), gw.POP3Addr, a.l.user, a.l.pass, false)
			}
		}()
	}
	wg.Wait()
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) { checkLogin(t, a.proto, a.l, a.err, wantText) })
	}
}

func checkLogin(t *testing.T, proto string, l login, err error, wantText string) {
	t.Helper()
	switch {
	case l.ok && err != nil:
		t.Errorf("%s login of %s: %v", proto, l.user, err)
	case !l.ok && err == nil:
		t.Errorf("%s login of %s with a wrong password or backend succeeded", proto, l.user)
	case !l.ok:
		text := err.Error()
		if proto == "imap" {
			text = imapErrorText(err)
		}
		if !strings.Contains(text, wantText) {
			t.Errorf("%s login of %s failed with %q, want %q", proto, l.user, text, wantText)
		}
	}
}

// checkAuthServer asks imapgate directly, as nginx would, and checks the
// backend address it names.
func checkAuthServer(t *testing.T, gw *harness.Gateway, proto, user, pass, wantServer, wantPort string) {
	t.Helper()
	h, err := gw.AuthRequest(ctxFor(t, 30*time.Second), proto, user, pass, nil)
	if err != nil {
		t.Fatalf("auth_http request for %s/%s: %v", proto, user, err)
	}
	if got := h.Get("Auth-Status"); got != "OK" {
		t.Fatalf("%s/%s: Auth-Status %q, want OK", proto, user, got)
	}
	if got := h.Get("Auth-Server"); got != wantServer {
		t.Errorf("%s/%s: Auth-Server %q, want %q", proto, user, got, wantServer)
	}
	if got := h.Get("Auth-Port"); got != wantPort {
		t.Errorf("%s/%s: Auth-Port %q, want %q", proto, user, got, wantPort)
	}
}

// TestFirstLetterRouting is the PHP seed's rule (scenario a): users starting
// with a, c, f or g live on mailhost01, the others on mailhost02. Right
// passwords log in through nginx over IMAP and POP3 on the right backend;
// a user routed to a backend that does not have it is refused.
func TestFirstLetterRouting(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	gw := startGateway(t, seedSettings())
	checkAuthServer(t, gw, "imap", "alice", e.Password("mailhost01", "alice"), harness.IPMailhost01, "143")
	checkAuthServer(t, gw, "pop3", "gina", e.Password("mailhost01", "gina"), harness.IPMailhost01, "110")
	checkAuthServer(t, gw, "imap", "bob", e.Password("mailhost02", "bob"), harness.IPMailhost02, "143")
	checkAuthServer(t, gw, "pop3", "dave", e.Password("mailhost02", "dave"), harness.IPMailhost02, "110")
	checkAuthServer(t, gw, "smtp", "carol", e.Password("mailhost01", "carol"), harness.IPMailhost01, "25")
	tryAll(t, gw, []login{
		{"alice", e.Password("mailhost01", "alice"), true, false},
		{"carol", e.Password("mailhost01", "carol"), true, false},
		{"frank", e.Password("mailhost01", "frank"), true, false},
		{"gina", e.Password("mailhost01", "gina"), true, false},
		{"bob", e.Password("mailhost02", "bob"), true, false},
		{"dave", e.Password("mailhost02", "dave"), true, false},
		// zoe is on both hosts with different passwords: z → mailhost02.
		{"zoe", e.Password("mailhost02", "zoe"), true, false},
		{"zoe", e.Password("mailhost01", "zoe"), false, false},
		// amy exists only on mailhost02, but a → mailhost01.
		{"amy", e.Password("mailhost02", "amy"), false, false},
	}, invalidText)
}

// TestUsersFileRouting is the Cyrus howto's setup (scenario b): two
// backends on one IP with different ports (mailhost01 on 127.0.0.2:143/110,
// mailhost02 on 127.0.0.2:9143/9110), users listed in a users file, a line
// without a backend going to IMAPGATE_USERS_FILE_BACKEND, and users not in
// the file refused.
func TestUsersFileRouting(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: the Cyrus scenario needs mailhost02 on 127.0.0.2:9143/9110")
	}
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# Cyrus howto: server3 and server4 on one IP\nalice server3\nzoe   server4\nbob server4\ndave\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ip := harness.IPMailhost01
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS": fmt.Sprintf("server3=imap://%s:143,pop3://%s:110,smtp://%s:25;server4=imap://%s:9143,pop3://%s:9110,smtp://%s:25",
			ip, ip, ip, ip, ip, ip),
		"IMAPGATE_USERS_FILE":         users,
		"IMAPGATE_USERS_FILE_BACKEND": "server4",
	})
	checkAuthServer(t, gw, "imap", "alice", e.Password("mailhost01", "alice"), ip, "143")
	checkAuthServer(t, gw, "imap", "bob", e.Password("mailhost02", "bob"), ip, "9143")
	checkAuthServer(t, gw, "pop3", "dave", e.Password("mailhost02", "dave"), ip, "9110")
	tryAll(t, gw, []login{
		{"alice", e.Password("mailhost01", "alice"), true, false},
		{"bob", e.Password("mailhost02", "bob"), true, false},
		{"dave", e.Password("mailhost02", "dave"), true, false},
		{"zoe", e.Password("mailhost02", "zoe"), true, false},
		{"zoe", e.Password("mailhost01", "zoe"), false, false},
		// erin is on mailhost02 but not in the users file, and there is
		// no default backend.
		{"erin", e.Password("mailhost02", "erin"), false, false},
	}, invalidText)
}

// TestBackendByHostName gives a backend by host name (scenario i):
// "localhost" with imapgate's default ports moved to where mailhost01 also
// listens on 127.0.0.1. nginx never resolves names, so Auth-Server must be
// the literal IP, and the login through nginx works.
func TestBackendByHostName(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: needs mailhost01 on 127.0.0.1:10143/10110")
	}
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=localhost",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		"IMAPGATE_PORT_IMAP":       "10143",
		"IMAPGATE_PORT_POP3":       "10110",
		"IMAPGATE_PORT_SMTP":       "10025",
	})
	checkAuthServer(t, gw, "imap", "alice", e.Password("mailhost01", "alice"), "127.0.0.1", "10143")
	checkAuthServer(t, gw, "pop3", "alice", e.Password("mailhost01", "alice"), "127.0.0.1", "10110")
	checkAuthServer(t, gw, "smtp", "alice", e.Password("mailhost01", "alice"), "127.0.0.1", "10025")
	tryAll(t, gw, []login{
		{"frank", e.Password("mailhost01", "frank"), true, false},
		{"frank", e.Password("mailhost01", "gina"), false, false},
	}, invalidText)
}
