package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// loaded reads and checks env as a start does; the test fails on a bad
// setting.
func loaded(t *testing.T, env map[string]string) config {
	t.Helper()
	s, err := loadSettings(context.Background(), envconfig.MapLookuper(env), nil)
	t.Cleanup(s.closeDirectories)
	if err != nil {
		t.Fatalf("settings: %v", err)
	}
	return s.config
}

// printConfig runs -print-config on env.
func printConfig(t *testing.T, env map[string]string) string {
	t.Helper()
	var out, errOut strings.Builder
	if code := runPrintConfig(context.Background(), envconfig.MapLookuper(env), &out, &errOut); code != 0 {
		t.Fatalf("-print-config: exit %d: %s", code, errOut.String())
	}
	return out.String()
}

// shellRead reads an environment file as POSIX sh does (set -a; . FILE),
// the reader the test has besides systemd itself (which the Debian
// package's integration test asks), and returns its IMAPGATE_ variables.
func shellRead(t *testing.T, file string) map[string]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "imapgate.env")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `set -a; . "$1"; exec env -0`, "sh", path)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh reading the printed settings: %v", err)
	}
	env := make(map[string]string)
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, envPrefix) {
			env[k] = v
		}
	}
	return env
}

// assignments returns the file's VARIABLE=value lines, in order, and the
// comment line above each, by variable.
func assignments(file string) (lines []string, sources map[string]string) {
	sources = make(map[string]string)
	comment := ""
	for _, line := range strings.Split(file, "\n") {
		switch {
		case strings.HasPrefix(line, "# "):
			comment = strings.TrimPrefix(line, "# ")
		case strings.HasPrefix(line, envPrefix):
			lines = append(lines, line)
			key, _, _ := strings.Cut(line, "=")
			sources[key] = comment
		}
	}
	return lines, sources
}

// TestPrintConfigReadsBack: the printed settings, read back by sh, are
// the same settings, secrets aside (one from a file is the same file);
// no secret is in the print; every setting is there, in the order of
// config's fields, below its source; printing what was read back gives
// the same lines.
func TestPrintConfigReadsBack(t *testing.T) {
	dir := t.TempDir()
	// A directory whose name needs double quotes: a single quote, a
	// backslash, a dollar and a space.
	odd := filepath.Join(dir, `it's a \$dir`)
	if err := os.Mkdir(odd, 0o700); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(odd, "users")
	bindPWFile := filepath.Join(dir, "ldap-pw")
	const sharedSecret, sqlPassword, bindPassword = `shared "secret" $42`, "sql-pw-4711", "bind-pw-0815"
	for path, content := range map[string]string{users: "alice mailhost01\nbob\n", bindPWFile: bindPassword + "\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{
		"IMAPGATE_BACKENDS":                "mailhost01=127.0.70.1;mailhost02=imap://127.0.70.2:1143,smtp://127.0.70.2",
		"IMAPGATE_USERS_FILE":              users,
		"IMAPGATE_USERS_FILE_BACKEND":      "mailhost02",
		"IMAPGATE_FIRST_LETTER":            "acfg=mailhost01",
		"IMAPGATE_DEFAULT_BACKEND":         "mailhost02",
		"IMAPGATE_SQL_URL":                 "postgres://imapgate:" + sqlPassword + "@127.0.70.1:5432/mail?sslmode=disable",
		"IMAPGATE_SQL_QUERY":               "select mail_server from mailaccounts where username=$1 and status <> 'off' limit 1",
		"IMAPGATE_SQL_TIMEOUT":             "1500ms",
		"IMAPGATE_LDAP_URL":                "ldap://127.0.70.1",
		"IMAPGATE_LDAP_BASE_DN":            "ou=people,dc=example,dc=org",
		"IMAPGATE_LDAP_BIND_DN":            "cn=imapgate,dc=example,dc=org",
		"IMAPGATE_LDAP_BIND_PASSWORD_FILE": bindPWFile,
		"IMAPGATE_LDAP_FILTER":             "(&(objectClass=inetOrgPerson)(uid=%s))",
		"IMAPGATE_ROUTES":                  "users-file,sql,ldap,first-letter,default",
		"IMAPGATE_SHARED_SECRET":           sharedSecret,
		"IMAPGATE_ALLOW_FROM":              "127.0.0.1, 10.0.0.0/8, ::1",
		"IMAPGATE_TRUSTED_NETWORKS":        "192.0.2.0/24",
		"IMAPGATE_CACHE_TTL":               "90s",
		"IMAPGATE_LIMIT_WINDOW":            "1h",
		"IMAPGATE_FORWARD_CLIENT_IP":       "false",
		"IMAPGATE_LOG_FORMAT":              "json",
	}
	want := loaded(t, env)
	printed := printConfig(t, env)

	for _, secret := range []string{sharedSecret, sqlPassword, bindPassword} {
		if strings.Contains(printed, secret) {
			t.Errorf("the print holds the secret %q:\n%s", secret, printed)
		}
	}
	lines, sources := assignments(printed)
	var keys []string
	for _, line := range lines {
		key, _, _ := strings.Cut(line, "=")
		name := strings.TrimPrefix(key, envPrefix)
		if secret, ok := strings.CutSuffix(name, "_FILE"); ok && slices.Contains(secretSettings, secret) {
			name = secret
		}
		keys = append(keys, name)
	}
	if !reflect.DeepEqual(keys, settingNames()) {
		t.Errorf("printed settings %v,\nwant config's %v", keys, settingNames())
	}
	for key, source := range map[string]string{
		"IMAPGATE_LISTEN":                  "default",
		"IMAPGATE_LDAP_FILTER":             "environment",
		"IMAPGATE_LDAP_BIND_PASSWORD_FILE": "file",
		"IMAPGATE_SHARED_SECRET":           "environment, redacted",
		"IMAPGATE_SQL_URL":                 "environment, redacted",
	} {
		if sources[key] != source {
			t.Errorf("%s: source %q, want %q", key, sources[key], source)
		}
	}
	for _, line := range []string{
		"IMAPGATE_SHARED_SECRET='<redacted>'",
		"IMAPGATE_SQL_URL='postgres://imapgate:xxxxx@127.0.70.1:5432/mail?sslmode=disable'",
		"IMAPGATE_CACHE_TTL=1m30s",
		"IMAPGATE_LIMIT_WINDOW=1h",
		"IMAPGATE_ALLOW_FROM=127.0.0.1,10.0.0.0/8,::1",
	} {
		if !strings.Contains(printed, "\n"+line+"\n") {
			t.Errorf("no line %s in:\n%s", line, printed)
		}
	}

	back := shellRead(t, printed)
	got := loaded(t, back)
	if got.SharedSecret != redactedSecret {
		t.Errorf("shared secret read back: %q, want %q", got.SharedSecret, redactedSecret)
	}
	if got.LDAPBindPassword != bindPassword {
		t.Errorf("bind password read back from its file: %q", got.LDAPBindPassword)
	}
	got.SharedSecret, want.SharedSecret = "", ""
	got.SQLURL, want.SQLURL = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back:\n%+v\nwant:\n%+v", got, want)
	}
	if again, _ := assignments(printConfig(t, back)); !reflect.DeepEqual(again, lines) {
		t.Errorf("printing the settings read back:\n%s\nwant:\n%s", strings.Join(again, "\n"), strings.Join(lines, "\n"))
	}
}

// TestPrintConfigSecretURLFromFile: a URL read from a file is printed as
// its _FILE, and the comment shows the URL without its password.
func TestPrintConfigSecretURLFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sql-url")
	if err := os.WriteFile(path, []byte("mysql://imapgate:pw-from-file@127.0.70.1:3306/mail\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	printed := printConfig(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.70.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		"IMAPGATE_SQL_URL_FILE":    path,
		"IMAPGATE_SQL_QUERY":       "select mail_server from mailaccounts where username=? limit 1",
	})
	want := "# file, holding mysql://imapgate:xxxxx@127.0.70.1:3306/mail\nIMAPGATE_SQL_URL_FILE=" + path + "\n"
	if !strings.Contains(printed, want) || strings.Contains(printed, "pw-from-file") {
		t.Errorf("want %q in:\n%s", want, printed)
	}
}

// TestPrintConfigRefusesBadSettings: settings a start refuses are
// reported as a start reports them, and nothing is printed.
func TestPrintConfigRefusesBadSettings(t *testing.T) {
	var out, errOut strings.Builder
	code := runPrintConfig(context.Background(), envconfig.MapLookuper(map[string]string{"IMAPGATE_LOG_LEVEL": "loud"}), &out, &errOut)
	if code != exitConfig || out.Len() != 0 || !strings.HasPrefix(errOut.String(), "imapgate: IMAPGATE_BACKENDS: required") {
		t.Errorf("exit %d, printed %q, errors %q", code, out.String(), errOut.String())
	}
}

func TestRedactSecret(t *testing.T) {
	for _, tt := range []struct{ name, value, want string }{
		{"SHARED_SECRET", "postgres://u:pw@db/x", redactedSecret}, // not a URL setting
		{"LDAP_BIND_PASSWORD", "hunter2", redactedSecret},
		{"SQL_URL", "postgres://imapgate:s%40cret@db.example:5432/mail", "postgres://imapgate:xxxxx@db.example:5432/mail"},
		{"SQL_URL", "postgres://db.example/mail?user=imapgate&password=s3cret", "postgres://db.example/mail?password=xxxxx&user=imapgate"},
		{"SQL_URL", "postgres://imapgate@db.example/mail", "postgres://imapgate@db.example/mail"},
		{"STATE_URL", "redis://:s3cret@127.0.70.1:6379/0", "redis://:xxxxx@127.0.70.1:6379/0"},
		// The password is also the user name: nothing of it may show.
		{"SQL_URL", "mysql://s3cret:s3cret@db/mail", redactedSecret},
		{"SQL_URL", "not a URL", redactedSecret},
	} {
		if got := redactSecret(tt.name, tt.value); got != tt.want {
			t.Errorf("redactSecret(%s, %q) = %q, want %q", tt.name, tt.value, got, tt.want)
		}
	}
}

func TestEnvQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"127.0.0.1:9180":         "127.0.0.1:9180",
		"a=b;c=d":                "'a=b;c=d'",
		"(uid=%s)":               "'(uid=%s)'",
		" lead and trail ":       "' lead and trail '",
		`it's "$x" \ and ` + "`": `"it's \"\$x\" \\ and ` + "\\`\"",
		"~/home":                 "'~/home'",
		"[::1]:9180":             "'[::1]:9180'",
	} {
		if got := envQuote(in); got != want {
			t.Errorf("envQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 1500 * time.Millisecond: "1.5s", 90 * time.Second: "1m30s", 5 * time.Minute: "5m",
		time.Hour: "1h", 90 * time.Minute: "1h30m", time.Hour + time.Second: "1h0m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("%q reads back as %v, %v", formatDuration(d), back, err)
		}
	}
}
