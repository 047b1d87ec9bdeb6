package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/integration/harness"
)

// The directory sources against the real servers, without imapgate's
// wiring: what each answers for known, unknown and hostile user names,
// and that a stopped server is an error (temporary) and a restarted one
// answers again through the same source.

// testBackends are the backends the directories name.
func testBackends(t *testing.T) map[string]*backend.Backend {
	t.Helper()
	bs, err := backend.ParseBackendsWith("mailhost01="+harness.IPMailhost01+";mailhost02="+harness.IPMailhost02,
		backend.Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// hostileUsers are user names that try to change the query or the
// filter. Each must route nowhere.
var hostileUsers = []string{
	"' or 1=1 --", "alice' --", "alice' or '1'='1", `alice" or "1"="1`, "x' union select 'mailhost01", "alice;",
	"*)(uid=*", "*", "alice)(uid=*", "*)(|(objectClass=*", `alice\`, "%", "_lice", "alice%",
}

func TestSQLSourceMariaDB(t *testing.T) {
	e := requireEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	srv, err := e.StartMariaDB(ctx)
	if err != nil {
		t.Fatalf("start MariaDB: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	testDirectorySource(t, srv, harness.DirectoryPassword, func() (backend.Source, error) {
		return backend.OpenSQL(backend.SQLConfig{URL: harness.MariaDBURL(), Backends: testBackends(t),
			// The Perl seed's query, less its password column.
			Query: "select mail_server from mailaccounts where username=? limit 1", Timeout: 2 * time.Second})
	})
}

func TestSQLSourcePostgres(t *testing.T) {
	e := requireEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	srv, err := e.StartPostgres(ctx)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	testDirectorySource(t, srv, harness.DirectoryPassword, func() (backend.Source, error) {
		return backend.OpenSQL(backend.SQLConfig{URL: harness.PostgresURL(), Backends: testBackends(t),
			Query: "select mail_server from mailaccounts where username=$1 limit 1", Timeout: 2 * time.Second})
	})
}

func TestLDAPSource(t *testing.T) {
	e := requireEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	srv, err := e.StartSlapd(ctx)
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct {
		name     string
		url      string
		startTLS bool
	}{{"StartTLS", harness.SlapdURL, true}, {"ldaps", harness.SlapdTLSURL, false}} {
		t.Run(tc.name, func(t *testing.T) {
			testDirectorySource(t, srv, harness.LDAPBindPassword, func() (backend.Source, error) {
				return backend.OpenLDAP(backend.LDAPConfig{URL: tc.url, StartTLS: tc.startTLS, CAFile: e.CAFile,
					BindDN: harness.LDAPBindDN, BindPassword: harness.LDAPBindPassword, BaseDN: harness.LDAPBaseDN,
					Backends: testBackends(t), Timeout: 2 * time.Second})
			})
		})
	}
	t.Run("wrong bind password", func(t *testing.T) {
		src, err := backend.OpenLDAP(backend.LDAPConfig{URL: harness.SlapdURL, BindDN: harness.LDAPBindDN,
			BindPassword: "not-the-password", BaseDN: harness.LDAPBaseDN, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		_, err = src.Select(ctxFor(t, 10*time.Second), "alice")
		if err == nil || !strings.Contains(err.Error(), "Invalid Credentials") || strings.Contains(err.Error(), "not-the-password") {
			t.Fatalf("bind with a wrong password: %v; want Invalid Credentials, without the password", err)
		}
	})
}

// testDirectorySource runs the checks every directory must pass against
// srv, with sources from open.
func testDirectorySource(t *testing.T, srv *harness.Server, secret string, open func() (backend.Source, error)) {
	src, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	ctx := ctxFor(t, time.Minute)
	for _, u := range harness.DirectoryUsers {
		b, err := src.Select(ctx, u.User)
		if err != nil {
			t.Fatalf("Select(%s): %v", u.User, err)
		}
		if b == nil || b.Name != u.Backend {
			t.Errorf("Select(%s) = %v, want %s", u.User, b, u.Backend)
		}
	}
	for _, u := range append([]string{"zoe", "nobody", "ALICE-not"}, hostileUsers...) {
		if b, err := src.Select(ctx, u); err != nil || b != nil {
			t.Errorf("Select(%q) = %v, %v; want no such user", u, b, err)
		}
	}
	if err := src.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	// The outage, through a Directory as imapgate uses it: alice is
	// cached (and served stale), bob is not.
	dir := &backend.Directory{Name: "test", Source: src, TTL: -1, NegativeTTL: -1}
	if b, err := dir.Select(ctx, "alice"); err != nil || b == nil {
		t.Fatalf("warm-up Select(alice) = %v, %v", b, err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop %s: %v", srv.Name, err)
	}
	for _, u := range []string{"bob", "zoe"} {
		b, err := src.Select(ctx, u)
		if err == nil || b != nil {
			t.Fatalf("%s stopped: Select(%s) = %v, %v; want an error", srv.Name, u, b, err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q contains the password", err)
		}
		t.Logf("%s stopped: Select(%s): %v", srv.Name, u, err)
	}
	if err := src.Ping(ctx); err == nil {
		t.Fatalf("%s stopped: Ping succeeded", srv.Name)
	}
	var tr backend.Trace
	if b, err := dir.Select(backend.WithTrace(ctx, &tr), "alice"); err != nil || b == nil || len(tr.Stale) != 1 {
		t.Fatalf("%s stopped: cached alice = %v, %v, stale %v; want the stale answer, traced", srv.Name, b, err, tr.Stale)
	}
	if _, err := dir.Select(ctx, "bob"); err == nil {
		t.Fatalf("%s stopped: uncached bob through the Directory: no error", srv.Name)
	}
	if st := dir.State(); st.Up {
		t.Fatalf("%s stopped: directory state %+v, want down", srv.Name, st)
	}

	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restart %s: %v", srv.Name, err)
	}
	// The same source reconnects by itself.
	b, err := waitSelect(ctx, src, "bob")
	if err != nil || b == nil || b.Name != "mailhost02" {
		t.Fatalf("%s restarted: Select(bob) = %v, %v; want mailhost02", srv.Name, b, err)
	}
	if b, err := dir.Select(ctx, "dave"); err != nil || b == nil {
		t.Fatalf("%s restarted: Directory Select(dave) = %v, %v", srv.Name, b, err)
	}
	if st := dir.State(); !st.Up {
		t.Fatalf("%s restarted: state %+v, want up", srv.Name, st)
	}
}

// waitSelect asks src until it answers without error: the first lookup
// after a restart may find a connection the server dropped, and a source
// is allowed one failed lookup for it (database/sql and our LDAP pool
// retry on a new connection, so in practice the first answer is right).
func waitSelect(ctx context.Context, src backend.Source, user string) (*backend.Backend, error) {
	var last error
	for range 3 {
		b, err := src.Select(ctx, user)
		if err == nil {
			return b, nil
		}
		last = err
	}
	return nil, errors.Join(errors.New("three lookups failed"), last)
}
