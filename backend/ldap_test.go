package backend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func TestOpenLDAPErrors(t *testing.T) {
	ok := LDAPConfig{URL: "ldap://127.0.20.3", BaseDN: "ou=people,dc=example,dc=org"}
	tests := []struct {
		name   string
		change func(*LDAPConfig)
		want   string
	}{
		{"bad bind DN", func(c *LDAPConfig) { c.BindDN, c.BindPassword = "cn=x,,", "pw" }, "bind DN"},
		{"scheme", func(c *LDAPConfig) { c.URL = "http://h" }, `scheme "http"`},
		{"no host", func(c *LDAPConfig) { c.URL = "ldap://" }, "no host"},
		{"base DN in URL", func(c *LDAPConfig) { c.URL = "ldap://h/dc=example,dc=org" }, "settings of their own"},
		{"filter in URL", func(c *LDAPConfig) { c.URL = "ldap://h?mailHost?sub?(uid=%s)" }, "settings of their own"},
		{"credentials in URL", func(c *LDAPConfig) { c.URL = "ldap://cn=admin:pw@h" }, "settings of their own"},
		{"StartTLS on ldaps", func(c *LDAPConfig) { c.URL, c.StartTLS = "ldaps://h", true }, "TLS already"},
		{"no %s", func(c *LDAPConfig) { c.Filter = "(uid=alice)" }, "no %s"},
		{"other verb", func(c *LDAPConfig) { c.Filter = "(uid=%d%s)" }, "other than %s"},
		{"bad filter", func(c *LDAPConfig) { c.Filter = "(uid=%s" }, "filter"},
		{"no base", func(c *LDAPConfig) { c.BaseDN = "" }, "base DN: empty"},
		{"bad base", func(c *LDAPConfig) { c.BaseDN = "dc=example,,x" }, "base DN"},
		{"bind without password", func(c *LDAPConfig) { c.BindDN = "cn=imapgate,dc=example,dc=org" }, "no bind password"},
		{"missing CA", func(c *LDAPConfig) { c.CAFile = "/nonexistent/ca.pem" }, "CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			_, err := OpenLDAP(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenLDAP: %v, want %q", err, tt.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field == "" {
				t.Errorf("OpenLDAP: %v is not a ConfigError naming a field", err)
			}
		})
	}
	l, err := OpenLDAP(ok)
	if err != nil {
		t.Fatal(err)
	}
	if l.cfg.Filter != DefaultLDAPFilter || l.cfg.Attribute != DefaultLDAPAttribute || cap(l.slots) != DefaultLDAPMaxConns {
		t.Errorf("defaults not applied: %+v", l.cfg)
	}
	l.Close()
}

func TestFillFilterEscapesTheUser(t *testing.T) {
	for user, want := range map[string]string{
		"alice":            "(uid=alice)",
		"*)(uid=*":         `(uid=\2a\29\28uid=\2a)`,
		"*":                `(uid=\2a)`,
		`a\b`:              `(uid=a\5cb)`,
		"josé":             `(uid=jos\c3\a9)`,
		"' or 1=1 --":      "(uid=' or 1=1 --)",
		"x)(|(objectClass": `(uid=x\29\28|\28objectClass)`,
	} {
		got := fillFilter("(uid=%s)", user)
		if got != want {
			t.Errorf("fillFilter(%q) = %s, want %s", user, got, want)
		}
		// Whatever the user, the filter keeps its one equality match.
		if _, err := ldap.CompileFilter(got); err != nil {
			t.Errorf("fillFilter(%q) = %s does not compile: %v", user, got, err)
		}
	}
	if got := fillFilter("(|(uid=%s)(mail=%s))", "*"); got != `(|(uid=\2a)(mail=\2a))` {
		t.Errorf("two %%s: %s", got)
	}
}

func TestLDAPDownIsAnErrorWithoutThePassword(t *testing.T) {
	// Nothing listens on port 1 of this loopback address.
	l, err := OpenLDAP(LDAPConfig{URL: "ldap://127.0.0.1:1", BaseDN: "dc=example,dc=org",
		BindDN: "cn=imapgate,dc=example,dc=org", BindPassword: "127.0.0.1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := l.Select(context.Background(), "alice")
	if err == nil || b != nil {
		t.Fatalf("Select on a closed port = %v, %v; want an error", b, err)
	}
	// The "password" is the address, so redaction shows.
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q contains the bind password", err)
	}
	if err := l.Ping(context.Background()); err == nil {
		t.Error("Ping on a closed port: no error")
	}
}

func TestOpenLDAPCAFile(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, selfSignedPEM(t), 0o644)
	l, err := OpenLDAP(LDAPConfig{URL: "ldaps://ldap.example", BaseDN: "dc=example,dc=org", CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if l.tls.RootCAs == nil || l.tls.ServerName != "ldap.example" {
		t.Errorf("TLS config %+v", l.tls)
	}
	l.Close()
	os.WriteFile(ca, []byte("nope"), 0o644)
	if _, err := OpenLDAP(LDAPConfig{URL: "ldaps://ldap.example", BaseDN: "dc=example,dc=org", CAFile: ca}); err == nil {
		t.Error("a CA file without PEM was accepted")
	}
}
