package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// checkConfig runs -check-config on env and returns what it printed and
// its exit status.
func checkConfig(t *testing.T, env map[string]string) (string, int) {
	t.Helper()
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	var out strings.Builder
	code := runCheckConfig(context.Background(), envconfig.MapLookuper(env), environ, &out)
	return out.String(), code
}

func TestCheckConfigOK(t *testing.T) {
	out, code := checkConfig(t, map[string]string{
		// A name that resolves (from /etc/hosts) and an IP literal.
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.70.1;mailhost02=localhost",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
		"IMAPGATE_LISTEN":          "127.0.70.1:9180",
		"IMAPGATE_METRICS_LISTEN":  "localhost:https",
	})
	if out != "ok\n" || code != 0 {
		t.Errorf("-check-config printed %q, exit %d; want ok, 0", out, code)
	}
}

// TestCheckConfigReportsEveryProblem: one line per problem, each naming
// its variable: validation's in the order of the settings (a value that
// does not decode included), then the variables that are no setting, then
// the live checks (listen addresses, backend names, directories, nothing
// listening on their ports) in their order; no password in any line.
func TestCheckConfigReportsEveryProblem(t *testing.T) {
	const sqlPassword = "sql-pw-4711"
	out, code := checkConfig(t, map[string]string{
		"IMAPGATE_PORT_IMAP":       "imap",
		"IMAPGATE_LOG_LEVEL":       "loud",
		"IMAPGATE_BACKEND":         "mailhost01=127.0.70.1",
		"IMAPGATE_SHARD_SECRET":    "s",
		"IMAPGATE_LISTEN":          "127.0.70.1",
		"IMAPGATE_METRICS_LISTEN":  "127.0.70.1:99999",
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.70.1;mailhost02=nosuch.invalid",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		"IMAPGATE_SQL_URL":         "postgres://imapgate:" + sqlPassword + "@127.0.70.1:1/mail",
		"IMAPGATE_SQL_QUERY":       "select mail_server from mailaccounts where username=$1",
		"IMAPGATE_LDAP_URL":        "ldap://127.0.70.1:1",
		"IMAPGATE_LDAP_BASE_DN":    "dc=example,dc=org",
	})
	if code != exitConfig {
		t.Errorf("exit %d, want %d", code, exitConfig)
	}
	want := []string{
		"IMAPGATE_PORT_IMAP: ",
		"IMAPGATE_LOG_LEVEL: ",
		"IMAPGATE_BACKEND: not a setting: imapgate ignores it; did you mean IMAPGATE_BACKENDS?",
		"IMAPGATE_SHARD_SECRET: not a setting: imapgate ignores it; did you mean IMAPGATE_SHARED_SECRET?",
		"IMAPGATE_LISTEN: address 127.0.70.1: missing port in address",
		"IMAPGATE_METRICS_LISTEN: ",
		`IMAPGATE_BACKENDS: backend "mailhost02": resolve "nosuch.invalid": `,
		"IMAPGATE_SQL_URL: the SQL directory failed its check: ",
		"IMAPGATE_LDAP_URL: the LDAP directory failed its check: ",
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want it to start with %q", i+1, lines[i], w)
		}
	}
	if strings.Contains(out, sqlPassword) {
		t.Errorf("the SQL URL's password is in the output:\n%s", out)
	}
}

// TestCheckConfigSameAddressTwice: the operations listener on the auth
// listener's address would fail to bind at start.
func TestCheckConfigSameAddressTwice(t *testing.T) {
	out, code := checkConfig(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.70.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		"IMAPGATE_LISTEN":          "127.0.70.1:9180",
		"IMAPGATE_METRICS_LISTEN":  "127.0.70.1:9180",
	})
	if code != exitConfig || !strings.HasPrefix(out, "IMAPGATE_METRICS_LISTEN: the same address as IMAPGATE_LISTEN") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// TestCheckConfigUnixSocket: a unix socket to listen on needs its
// directory (the socket itself is made at start).
func TestCheckConfigUnixSocket(t *testing.T) {
	env := map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.70.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		"IMAPGATE_LISTEN":          "unix:" + filepath.Join(t.TempDir(), "auth.sock"),
	}
	if out, code := checkConfig(t, env); out != "ok\n" || code != 0 {
		t.Errorf("socket in a directory that exists: exit %d:\n%s", code, out)
	}
	env["IMAPGATE_LISTEN"] = "unix:/nonexistent-imapgate-dir/auth.sock"
	out, code := checkConfig(t, env)
	if want := "IMAPGATE_LISTEN: the socket's directory: stat /nonexistent-imapgate-dir: no such file or directory\n"; out != want || code != exitConfig {
		t.Errorf("socket in a missing directory: exit %d: %q, want %q", code, out, want)
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                              "plain",
		"failed to connect:\n\ta: x\n\tb: y": "failed to connect: a: x; b: y",
		"first\nsecond\n":                    "first; second",
		"\nafter an empty line":              "after an empty line",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCheckConfigFlag runs the binary: exit status 2 and the lines on
// standard output, or 0 and ok; the environment is the process's own.
func TestCheckConfigFlag(t *testing.T) {
	bin := imapgateBinary(t)
	run := func(env ...string) (string, int) {
		cmd := exec.Command(bin, "-check-config")
		cmd.Env = env
		out, err := cmd.Output()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run("IMAPGATE_BACKENDS=mailhost01=127.0.70.1", "IMAPGATE_DEFAULT_BACKEND=mailhost01"); out != "ok\n" || code != 0 {
		t.Errorf("good settings: %q, exit %d", out, code)
	}
	out, code := run("IMAPGATE_DEFAULT_BACKEND=mailhost01", "IMAPGATE_LOG_FORMAT=xml")
	if code != exitConfig || out != "IMAPGATE_BACKENDS: required: the mail servers, name=host;... (see the README)\n"+
		"IMAPGATE_LOG_FORMAT: \"xml\" is not text or json\n" {
		t.Errorf("bad settings: exit %d:\n%s", code, out)
	}
}
