package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// End-to-end routing from the directories, through nginx and imapgate.
// These scenarios are written against the settings proposed for SQL and
// LDAP routing; they wait for imapgate's wiring of those settings.

// secretFile writes a secret setting's file (the _FILE form) in a
// directory of the test's own.
func secretFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// directorySettings are the settings every directory scenario shares:
// the seed's two backends, and a default backend, so that a user who
// silently fell through the directory would land somewhere.
func directorySettings() map[string]string {
	return map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
		// Every lookup asks the directory, so that an outage shows at the
		// next login; the stale window (its default) still serves the
		// users it knew.
		"IMAPGATE_ROUTE_CACHE_TTL": "0",
	}
}

func TestRoutingSQLMariaDB(t *testing.T) {
	e := requireEnv(t)
	srv, err := e.StartMariaDB(ctxFor(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("start MariaDB: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	s := directorySettings()
	s["IMAPGATE_SQL_URL_FILE"] = secretFile(t, "sql-url", harness.MariaDBURL())
	s["IMAPGATE_SQL_QUERY"] = "select mail_server from mailaccounts where username=? limit 1"
	directoryScenario(t, srv, "sql", s, harness.DirectoryPassword)
}

func TestRoutingSQLPostgres(t *testing.T) {
	e := requireEnv(t)
	srv, err := e.StartPostgres(ctxFor(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	s := directorySettings()
	s["IMAPGATE_SQL_URL"] = harness.PostgresURL()
	s["IMAPGATE_SQL_QUERY"] = "select mail_server from mailaccounts where username=$1 limit 1"
	directoryScenario(t, srv, "sql", s, harness.DirectoryPassword)
}

func TestRoutingLDAP(t *testing.T) {
	e := requireEnv(t)
	srv, err := e.StartSlapd(ctxFor(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	s := directorySettings()
	s["IMAPGATE_LDAP_URL"] = harness.SlapdURL
	s["IMAPGATE_LDAP_STARTTLS"] = "true"
	s["IMAPGATE_LDAP_CA_FILE"] = e.CAFile
	s["IMAPGATE_LDAP_BIND_DN"] = harness.LDAPBindDN
	s["IMAPGATE_LDAP_BIND_PASSWORD_FILE"] = secretFile(t, "ldap-pw", harness.LDAPBindPassword)
	s["IMAPGATE_LDAP_BASE_DN"] = harness.LDAPBaseDN
	// The defaults, written out as an operator would copy them.
	s["IMAPGATE_LDAP_FILTER"] = "(uid=%s)"
	s["IMAPGATE_LDAP_ATTRIBUTE"] = "mailHost"
	directoryScenario(t, srv, "ldap", s, harness.LDAPBindPassword)
}

// directoryScenario: the directory routes right passwords to the backend
// it names (a name or a host), wrong ones are refused, users it does not
// know go down the chain, hostile names route nowhere through it; with
// the directory stopped a user not in the cache gets "try later" (never
// the default backend) and a cached one is served stale (logged); started
// again, the same imapgate routes everyone again.
func directoryScenario(t *testing.T, srv *harness.Server, rule string, settings map[string]string, dirSecret string) {
	e := requireEnv(t)
	ip := "127.0.20.40"
	if rule == "ldap" {
		ip = "127.0.20.41"
	}
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{IP: ip, Env: settings})
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	gw.AddSecret(dirSecret)
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	checkAuthServer(t, gw, "imap", "alice", e.Password("mailhost01", "alice"), harness.IPMailhost01, "143")
	checkAuthServer(t, gw, "imap", "amy", e.Password("mailhost02", "amy"), harness.IPMailhost02, "143")
	tryAll(t, gw, []login{
		{"alice", e.Password("mailhost01", "alice"), true, false},
		{"bob", e.Password("mailhost02", "bob"), true, false},
		{"amy", e.Password("mailhost02", "amy"), true, false},
		{"carol", e.Password("mailhost01", "gina"), false, false},
		// Not in the directory: the default backend has zoe.
		{"zoe", e.Password("mailhost02", "zoe"), true, false},
	}, invalidText)
	for _, u := range []string{"alice", "amy"} {
		rec, err := gw.WaitLogin(ctxFor(t, 30*time.Second), 0, u, "imap")
		if err != nil || rec.Get("rule") != rule {
			t.Errorf("log of %s: rule %q (%v), want %s", u, rec.Get("rule"), err, rule)
		}
	}
	for _, hostile := range []string{"' or 1=1 --", "*)(uid=*"} {
		from := gw.Imapgate.Len()
		if err := imapLogin(ctxFor(t, 30*time.Second), e.ClientDialer(), gw.IMAPAddr, hostile, "x"); err == nil {
			t.Errorf("hostile user %q logged in", hostile)
		}
		if rec, err := gw.WaitLogin(ctxFor(t, 30*time.Second), from, hostile, "imap"); err != nil || rec.Get("rule") == rule {
			t.Errorf("hostile user %q: rule %q (%v); the directory must not name a backend", hostile, rec.Get("rule"), err)
		}
	}

	// imapgate -check-config with the same settings: the directory
	// answers; stopped, it fails the check, named by its URL's variable,
	// and the line does not hold its password.
	if out, code := runCheckConfig(t, settings); out != "ok\n" || code != 0 {
		t.Errorf("-check-config with %s up: exit %d:\n%s", srv.Name, code, out)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	want := "IMAPGATE_" + strings.ToUpper(rule) + "_URL: the " + strings.ToUpper(rule) + " directory failed its check: "
	if out, code := runCheckConfig(t, settings); code != 2 || !strings.HasPrefix(out, want) || strings.Count(out, "\n") != 1 || strings.Contains(out, dirSecret) {
		t.Errorf("-check-config with %s down: exit %d:\n%s\nwant 2 and one line starting %q", srv.Name, code, out, want)
	}
	// dave was never looked up: temporary, and not the default backend.
	from := gw.Imapgate.Len()
	err = imapLogin(ctxFor(t, 30*time.Second), e.ClientDialer(), gw.IMAPAddr, "dave", e.Password("mailhost02", "dave"))
	if err == nil || !strings.Contains(imapErrorText(err), temporaryText) {
		t.Errorf("%s down: dave: %v, want %q", srv.Name, err, temporaryText)
	}
	if rec, err := gw.WaitLogin(ctxFor(t, 30*time.Second), from, "dave", "imap"); err != nil ||
		rec.Get("outcome") != "temporary" || rec.Get("rule") != rule || rec.Get("backend") != "" {
		t.Errorf("%s down: dave's log line %v (%v): want outcome temporary, rule %s, no backend", srv.Name, rec, err, rule)
	}
	// alice was: her answer is served stale, and the log says so.
	from = gw.Imapgate.Len()
	if err := imapLogin(ctxFor(t, 30*time.Second), e.ClientDialer(), gw.IMAPAddr, "alice", e.Password("mailhost01", "alice")); err != nil {
		t.Errorf("%s down: cached alice: %v, want the stale route to work", srv.Name, err)
	}
	if rec, err := gw.WaitLogin(ctxFor(t, 30*time.Second), from, "alice", "imap"); err != nil || rec.Get("stale") != rule {
		t.Errorf("%s down: alice's log line %v (%v): want stale=%s", srv.Name, rec, err, rule)
	}
	ready := httpGetBody(ctxFor(t, 10*time.Second), "http://"+gw.AuthAddr+"/readyz")
	if !strings.Contains(ready, rule) {
		t.Errorf("%s down: /readyz says %q, want it to name %s", srv.Name, ready, rule)
	}

	if err := srv.Start(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	tryAll(t, gw, []login{{"dave", e.Password("mailhost02", "dave"), true, false}}, invalidText)
}

// runCheckConfig runs the binary under test with -check-config and
// exactly settings as its environment, and returns what it printed and
// its exit status.
func runCheckConfig(t *testing.T, settings map[string]string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctxFor(t, time.Minute), requireEnv(t).Binary, "-check-config")
	cmd.Env = []string{}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	} else if err != nil {
		t.Fatalf("imapgate -check-config: %v", err)
	}
	return string(out), 0
}

// TestRoutingOrder: IMAPGATE_ROUTES puts the users file before SQL, so
// a line in the file overrides the table, and SQL before the first-letter
// rule.
func TestRoutingOrder(t *testing.T) {
	e := requireEnv(t)
	srv, err := e.StartMariaDB(ctxFor(t, 2*time.Minute))
	if err != nil {
		t.Fatalf("start MariaDB: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	users := secretFile(t, "users", "# moved ahead of the table\nbob mailhost01\n")
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{IP: "127.0.20.42", Env: map[string]string{
		"IMAPGATE_BACKENDS":     fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_USERS_FILE":   users,
		"IMAPGATE_SQL_URL":      harness.MariaDBURL(),
		"IMAPGATE_SQL_QUERY":    "select mail_server from mailaccounts where username=? limit 1",
		"IMAPGATE_FIRST_LETTER": "z=mailhost02",
		"IMAPGATE_ROUTES":       "users-file,sql,first-letter",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	// bob is on mailhost02 in the table, but the file sends him to
	// mailhost01, which does not have him.
	tryAll(t, gw, []login{
		{"bob", e.Password("mailhost02", "bob"), false, false},
		{"alice", e.Password("mailhost01", "alice"), true, false},
		{"zoe", e.Password("mailhost02", "zoe"), true, false},
	}, invalidText)
}

// TestCyrusHowtoThroughImapgate is the Cyrus howto end to end: nginx's
// mail proxy asks imapgate, which routes by the users file (users.txt's
// users to server4, the others to server3), checks the password on the
// Cyrus server itself over TLS (verify-imap=...:993, verify-tls=tls) and
// sends nginx to the stream frontend. The howto's client now gets a real
// NO for a wrong password instead of a false OK; with server3 stopped, its
// users get "try later".
func TestCyrusHowtoThroughImapgate(t *testing.T) {
	e := requireEnv(t)
	servers, frontends := cyrusHowto(t)
	users := secretFile(t, "users.txt", "ben\nliz\n")
	spec := func(name, ip string) string {
		return fmt.Sprintf("%s=imap://%s,verify-imap=%s:993,verify-tls=tls,verify-ca-file=%s", name, frontends[name], ip, e.CAFile)
	}
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{IP: "127.0.20.43", Env: map[string]string{
		"IMAPGATE_BACKENDS":           spec("server3", harness.IPServer3) + ";" + spec("server4", harness.IPServer4),
		"IMAPGATE_USERS_FILE":         users,
		"IMAPGATE_USERS_FILE_BACKEND": "server4",
		"IMAPGATE_DEFAULT_BACKEND":    "server3",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	pw := func(server, user string) string {
		for _, a := range harness.CyrusAccounts[server] {
			if a.User == user {
				return a.Password
			}
		}
		t.Fatalf("no %s on %s", user, server)
		return ""
	}
	host, port, _ := strings.Cut(frontends["server3"], ":")
	checkAuthServer(t, gw, "imap", "tom", pw("server3", "tom"), host, port)
	ctx := ctxFor(t, time.Minute)
	for _, l := range []login{
		{"tom", pw("server3", "tom"), true, false},
		{"ben", pw("server4", "ben"), true, false},
		{"tom", "wrong-" + pw("server3", "tom"), false, false},
		// ben lives on server4: server3's password is no use.
		{"ben", pw("server3", "ann"), false, false},
	} {
		gw.AddSecret(l.pass)
		err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, l.user, l.pass)
		checkLogin(t, "imap", l, err, invalidText)
	}
	if err := servers["server3"].Stop(); err != nil {
		t.Fatal(err)
	}
	err = imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "ann", pw("server3", "ann"))
	if err == nil || !strings.Contains(imapErrorText(err), temporaryText) {
		t.Errorf("server3 down: ann: %v, want %q", err, temporaryText)
	}
	if err := servers["server3"].Start(ctx); err != nil {
		t.Fatal(err)
	}
	err = imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "ann", pw("server3", "ann"))
	checkLogin(t, "imap", login{"ann", pw("server3", "ann"), true, false}, err, invalidText)
}
