package integration

import (
	"context"
	"testing"
	"time"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/integration/harness"
)

// BenchmarkDirectoryLookup measures one user lookup against the real
// directories:
//
//	connect: a new source, its first lookup (connecting, and binding or
//	         authenticating) and Close: a lookup right after a start;
//	cold:    a lookup the cache cannot answer, over a pooled connection;
//	cached:  a lookup the Directory's cache answers.
//
// Run it alone, on an otherwise idle machine:
//
//	go test -run '^$' -bench DirectoryLookup -benchtime 2s ./integration/
func BenchmarkDirectoryLookup(b *testing.B) {
	if envErr != nil {
		b.Skipf("integration environment: %v", envErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	maria, err := env.StartMariaDB(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer maria.Close()
	pg, err := env.StartPostgres(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	ldapSrv, err := env.StartSlapd(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer ldapSrv.Close()
	bs, err := backend.ParseBackendsWith("mailhost01="+harness.IPMailhost01+";mailhost02="+harness.IPMailhost02, backend.Defaults{})
	if err != nil {
		b.Fatal(err)
	}
	sources := []struct {
		name string
		open func() (backend.Source, error)
	}{
		{"mariadb", func() (backend.Source, error) {
			return backend.OpenSQL(backend.SQLConfig{URL: harness.MariaDBURL(), Backends: bs,
				Query: "select mail_server from mailaccounts where username=? limit 1"})
		}},
		{"postgres", func() (backend.Source, error) {
			return backend.OpenSQL(backend.SQLConfig{URL: harness.PostgresURL(), Backends: bs,
				Query: "select mail_server from mailaccounts where username=$1 limit 1"})
		}},
		{"ldap-starttls", func() (backend.Source, error) {
			return backend.OpenLDAP(backend.LDAPConfig{URL: harness.SlapdURL, StartTLS: true, CAFile: env.CAFile,
				BindDN: harness.LDAPBindDN, BindPassword: harness.LDAPBindPassword, BaseDN: harness.LDAPBaseDN, Backends: bs})
		}},
	}
	users := harness.DirectoryUsers
	for _, s := range sources {
		b.Run(s.name+"/connect", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				src, err := s.open()
				if err != nil {
					b.Fatal(err)
				}
				if bk, err := src.Select(ctx, users[i%len(users)].User); err != nil || bk == nil {
					b.Fatalf("lookup: %v, %v", bk, err)
				}
				src.Close()
			}
		})
		src, err := s.open()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.name+"/cold", func(b *testing.B) {
			dir := &backend.Directory{Name: s.name, Source: src, TTL: -1, NegativeTTL: -1}
			for i := 0; b.Loop(); i++ {
				if bk, err := dir.Select(ctx, users[i%len(users)].User); err != nil || bk == nil {
					b.Fatalf("lookup: %v, %v", bk, err)
				}
			}
		})
		b.Run(s.name+"/cached", func(b *testing.B) {
			dir := &backend.Directory{Name: s.name, Source: src}
			for _, u := range users {
				dir.Select(ctx, u.User)
			}
			for i := 0; b.Loop(); i++ {
				if bk, err := dir.Select(ctx, users[i%len(users)].User); err != nil || bk == nil {
					b.Fatalf("lookup: %v, %v", bk, err)
				}
			}
		})
		src.Close()
	}
}
