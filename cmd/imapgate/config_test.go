package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"go.uber.org/goleak"
)

// testEnv is a configuration with two backends and a default, changed by
// kv: name, value pairs, where the value "<unset>" removes the name.
func testEnv(kv ...string) map[string]string {
	env := map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.0.2;mailhost02=127.0.0.3",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(env, kv[i])
			continue
		}
		env[kv[i]] = kv[i+1]
	}
	return env
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// build runs the whole configuration path main runs, from an environment.
func build(env map[string]string) (*service, error) {
	s, err := loadSettings(context.Background(), envconfig.MapLookuper(env), io.Discard)
	if err != nil {
		return nil, err
	}
	return newService(s), nil
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice nosuch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	caNoPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caNoPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := testEnv
	tests := []struct {
		name string
		env  map[string]string
		want string // the error must start with this variable
	}{
		{"backends missing", base("IMAPGATE_BACKENDS", "<unset>"), "IMAPGATE_BACKENDS"},
		{"backends garbled", base("IMAPGATE_BACKENDS", "mailhost01"), "IMAPGATE_BACKENDS"},
		{"backends bad url", base("IMAPGATE_BACKENDS", "m=imap://h:99999"), "IMAPGATE_BACKENDS"},
		{"port not a number", base("IMAPGATE_PORT_IMAP", "imap"), "IMAPGATE_PORT_IMAP"},
		{"port too big", base("IMAPGATE_PORT_POP3", "70000"), "IMAPGATE_PORT_POP3"},
		{"port zero", base("IMAPGATE_PORT_SMTP", "0"), "IMAPGATE_PORT_SMTP"},
		{"default names no backend", base("IMAPGATE_DEFAULT_BACKEND", "mailhost03"), "IMAPGATE_DEFAULT_BACKEND"},
		{"no rule at all", base("IMAPGATE_DEFAULT_BACKEND", "<unset>"), "IMAPGATE_DEFAULT_BACKEND"},
		{"first letter garbled", base("IMAPGATE_FIRST_LETTER", "acfg"), "IMAPGATE_FIRST_LETTER"},
		{"first letter unknown backend", base("IMAPGATE_FIRST_LETTER", "a=nosuch"), "IMAPGATE_FIRST_LETTER"},
		{"users file missing", base("IMAPGATE_USERS_FILE", filepath.Join(dir, "none")), "IMAPGATE_USERS_FILE"},
		{"users file bad line", base("IMAPGATE_USERS_FILE", users), "IMAPGATE_USERS_FILE"},
		{"users file backend unknown", base("IMAPGATE_USERS_FILE", users, "IMAPGATE_USERS_FILE_BACKEND", "x"), "IMAPGATE_USERS_FILE_BACKEND"},
		{"users file backend without file", base("IMAPGATE_USERS_FILE_BACKEND", "mailhost01"), "IMAPGATE_USERS_FILE_BACKEND"},
		{"verify tls unknown", base("IMAPGATE_VERIFY_TLS", "ssl"), "IMAPGATE_VERIFY_TLS"},
		{"ca file missing", base("IMAPGATE_VERIFY_TLS", "tls", "IMAPGATE_VERIFY_CA_FILE", filepath.Join(dir, "none")), "IMAPGATE_VERIFY_CA_FILE"},
		{"ca file not pem", base("IMAPGATE_VERIFY_TLS", "tls", "IMAPGATE_VERIFY_CA_FILE", caNoPEM), "IMAPGATE_VERIFY_CA_FILE"},
		{"ca file without tls", base("IMAPGATE_VERIFY_CA_FILE", caNoPEM), "IMAPGATE_VERIFY_CA_FILE"},
		{"timeout garbled", base("IMAPGATE_VERIFY_TIMEOUT", "ten"), "IMAPGATE_VERIFY_TIMEOUT"},
		{"timeout zero", base("IMAPGATE_VERIFY_TIMEOUT", "0s"), "IMAPGATE_VERIFY_TIMEOUT"},
		{"smtp verify unknown", base("IMAPGATE_SMTP_VERIFY", "smtp"), "IMAPGATE_SMTP_VERIFY"},
		{"smtp relay unknown", base("IMAPGATE_SMTP_RELAY", "relay"), "IMAPGATE_SMTP_RELAY"},
		{"smtp relay without smtp", base("IMAPGATE_BACKENDS", "m=imap://127.0.0.2:143", "IMAPGATE_DEFAULT_BACKEND", "m", "IMAPGATE_SMTP_RELAY", "m"), "IMAPGATE_SMTP_RELAY"},
		{"cache ttl garbled", base("IMAPGATE_CACHE_TTL", "long"), "IMAPGATE_CACHE_TTL"},
		{"cache ttl negative", base("IMAPGATE_CACHE_TTL", "-1s"), "IMAPGATE_CACHE_TTL"},
		{"max checks negative", base("IMAPGATE_MAX_CHECKS", "-1"), "IMAPGATE_MAX_CHECKS"},
		{"max conns negative", base("IMAPGATE_MAX_CONNS", "-1"), "IMAPGATE_MAX_CONNS"},
		{"max conns past the fd limit", base("IMAPGATE_MAX_CONNS", "1073741824"), "IMAPGATE_MAX_CONNS"},
		{"cache size zero", base("IMAPGATE_CACHE_SIZE", "0"), "IMAPGATE_CACHE_SIZE"},
		{"limit negative", base("IMAPGATE_LIMIT_PAIR", "-1"), "IMAPGATE_LIMIT_PAIR"},
		{"limit garbled", base("IMAPGATE_LIMIT_USER", "many"), "IMAPGATE_LIMIT_USER"},
		{"limit window zero", base("IMAPGATE_LIMIT_WINDOW", "0s"), "IMAPGATE_LIMIT_WINDOW"},
		{"trusted garbled", base("IMAPGATE_TRUSTED_NETWORKS", "10.0.0.0/8,webmail"), "IMAPGATE_TRUSTED_NETWORKS"},
		{"allow from garbled", base("IMAPGATE_ALLOW_FROM", "127.0.0.1/33"), "IMAPGATE_ALLOW_FROM"},
		{"forward client ip", base("IMAPGATE_FORWARD_CLIENT_IP", "maybe"), "IMAPGATE_FORWARD_CLIENT_IP"},
		{"probe interval", base("IMAPGATE_PROBE_INTERVAL", "0s"), "IMAPGATE_PROBE_INTERVAL"},
		{"max checks per network negative", base("IMAPGATE_MAX_CHECKS_PER_NETWORK", "-1"), "IMAPGATE_MAX_CHECKS_PER_NETWORK"},
		{"max tracked zero", base("IMAPGATE_LIMIT_MAX_TRACKED", "0"), "IMAPGATE_LIMIT_MAX_TRACKED"},
		{"state url scheme", base("IMAPGATE_STATE_URL", "memcached://h:11211"), "IMAPGATE_STATE_URL"},
		{"state url garbled", base("IMAPGATE_STATE_URL", "redis://:pw@h:port"), "IMAPGATE_STATE_URL"},
		{"state timeout zero", base("IMAPGATE_STATE_TIMEOUT", "0s"), "IMAPGATE_STATE_TIMEOUT"},
		{"log format", base("IMAPGATE_LOG_FORMAT", "xml"), "IMAPGATE_LOG_FORMAT"},
		{"log level", base("IMAPGATE_LOG_LEVEL", "loud"), "IMAPGATE_LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build(tt.env)
			if err == nil {
				t.Fatalf("no error for %v", tt.env)
			}
			if !strings.HasPrefix(err.Error(), tt.want+":") {
				t.Errorf("error %q does not start with %s", err, tt.want)
			}
		})
	}
}

func TestNetworksSetting(t *testing.T) {
	var n networks
	if err := n.EnvDecode(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::ffff:198.51.100.0/120,"); err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32 198.51.100.0/24]"
	if got := fmt.Sprint([]netip.Prefix(n)); got != want {
		t.Errorf("networks = %s, want %s", got, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	svc, err := build(map[string]string{
		"IMAPGATE_BACKENDS":     "mailhost01=127.0.0.2;mailhost02=127.0.0.3",
		"IMAPGATE_FIRST_LETTER": "acfg=mailhost01",
		// The PHP seed's rule: everyone else on mailhost02.
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
	})
	if err != nil {
		t.Fatal(err)
	}
	if svc.cfg.Listen != "127.0.0.1:9180" || svc.cfg.VerifyTLS != "none" || svc.cfg.VerifyTimeout.String() != "20s" || svc.handler.MaxChecksPerNetwork != 2 || svc.handler.Limits.MaxTracked != 100_000 {
		t.Errorf("defaults: %+v", svc.cfg)
	}
	for user, want := range map[string]string{"alice": "mailhost01", "george": "mailhost01", "bob": "mailhost02"} {
		r, err := svc.handler.Routes.Route(context.Background(), user)
		if err != nil || r.Backend == nil || r.Backend.Name != want {
			t.Errorf("Route(%q) = %+v, %v; want %s", user, r, err, want)
		}
	}
	if svc.handler.CacheTTL.String() != "5m0s" || svc.handler.Limits.PerPair != 10 || len(svc.handler.AllowFrom) != 0 {
		t.Errorf("cache and limit defaults: %v %+v", svc.handler.CacheTTL, svc.handler.Limits)
	}
	if svc.usersFile != nil || svc.handler.SMTPRelay != nil {
		t.Errorf("optional parts built without their settings")
	}
}

// TestConfigReportsEveryError: several bad settings are all named, one a
// line, in the order of the settings table, whatever order the
// environment has them in.
func TestConfigReportsEveryError(t *testing.T) {
	env := map[string]string{
		"IMAPGATE_LOG_LEVEL":     "loud",
		"IMAPGATE_FIRST_LETTER":  "a=nosuch",
		"IMAPGATE_BACKENDS":      "mailhost01=127.0.0.2",
		"IMAPGATE_LIMIT_USER":    "many",
		"IMAPGATE_PORT_IMAP":     "imap",
		"IMAPGATE_CACHE_SIZE":    "0",
		"IMAPGATE_VERIFY_TLS":    "ssl",
		"IMAPGATE_HTTP_SERVER":   "apache",
		"IMAPGATE_SHARED_SECRET": "x",
	}
	want := []string{"IMAPGATE_PORT_IMAP", "IMAPGATE_FIRST_LETTER", "IMAPGATE_VERIFY_TLS", "IMAPGATE_CACHE_SIZE",
		"IMAPGATE_LIMIT_USER", "IMAPGATE_LOG_LEVEL", "IMAPGATE_HTTP_SERVER"}
	for range 5 { // map order must not matter
		_, err := build(env)
		if err == nil {
			t.Fatal("no error")
		}
		var got []string
		for _, line := range strings.Split(err.Error(), "\n") {
			name, _, _ := strings.Cut(line, ":")
			got = append(got, name)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("errors name\n%v\nwant\n%v\nfull text:\n%s", got, want, err)
		}
	}
}

// TestSecretFromFile: a secret setting is read from the file its _FILE
// variable names, without the line end; setting both, or a file that
// cannot be read, is an error that names the variable and not the secret.
func TestSecretFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("s3cr3t from file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := testEnv
	svc, err := build(env("IMAPGATE_SHARED_SECRET_FILE", path))
	if err != nil {
		t.Fatal(err)
	}
	if svc.handler.SharedSecret != "s3cr3t from file" {
		t.Errorf("secret from file = %q", svc.handler.SharedSecret)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{env("IMAPGATE_SHARED_SECRET_FILE", path, "IMAPGATE_SHARED_SECRET", "inline"), "IMAPGATE_SHARED_SECRET: set both"},
		{env("IMAPGATE_SHARED_SECRET_FILE", filepath.Join(dir, "none")), "IMAPGATE_SHARED_SECRET_FILE: open"},
	} {
		_, err := build(tt.env)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("error %v, want one starting %q", err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "inline")) {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

// The store's URL holds a password: its _FILE form works, and no error
// about it repeats the password.
func TestStateURLSecret(t *testing.T) {
	base := map[string]string{"IMAPGATE_BACKENDS": "m=127.0.0.2", "IMAPGATE_DEFAULT_BACKEND": "m"}
	with := func(k, v string) map[string]string {
		env := maps.Clone(base)
		env[k] = v
		return env
	}
	_, err := build(with("IMAPGATE_STATE_URL", "redis://:hunter2-state@127.0.0.1:notaport/0"))
	if err == nil || strings.Contains(err.Error(), "hunter2-state") {
		t.Errorf("error %v: want one without the password", err)
	}
	path := filepath.Join(t.TempDir(), "state-url")
	if err := os.WriteFile(path, []byte("redis://:hunter2-state@127.0.0.1:1/0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc, err := build(with("IMAPGATE_STATE_URL_FILE", path))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.state.Close()
	if svc.state == nil || svc.state.Shared() {
		t.Errorf("a store nobody listens for: %v", svc.state)
	}
}

// Without IMAPGATE_MAX_CONNS the cap is the file descriptor limit less
// what the backends' checks and probes need, bounded by maxDerivedConns.
func TestMaxConnsDerived(t *testing.T) {
	s, err := loadSettings(context.Background(), envconfig.MapLookuper(map[string]string{
		"IMAPGATE_BACKENDS":        "a=127.0.0.2;b=127.0.0.3",
		"IMAPGATE_DEFAULT_BACKEND": "a",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	limit, err := fdLimit()
	if err != nil {
		t.Fatal(err)
	}
	want := min(limit-fdReserve(2, 32), maxDerivedConns)
	if s.maxConns != want || s.maxConns <= 0 || s.maxConns >= limit {
		t.Errorf("derived cap %d with a limit of %d, want %d", s.maxConns, limit, want)
	}
}

// After a crowd of connections has gone, its memory is handed back: the
// heap released to the system grows.
func TestReleaseAfterCrowd(t *testing.T) {
	var open atomic.Int64
	open.Store(crowdSize)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		releaseAfterCrowd(ctx, func() int { return int(open.Load()) }, time.Millisecond, 10*time.Millisecond)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	// Garbage a crowd would leave behind.
	junk := make([][]byte, 0, 1024)
	for range 1024 {
		junk = append(junk, make([]byte, 32<<10))
	}
	runtime.KeepAlive(junk)
	junk = nil
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	time.Sleep(20 * time.Millisecond)
	open.Store(0)
	for range 400 {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		if now.HeapReleased > before.HeapReleased+16<<20 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("the memory a crowd left was not released")
}
