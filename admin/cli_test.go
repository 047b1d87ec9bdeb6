package admin

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs `imapgate admin args…` with env as the environment.
func runCLI(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Main(args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func (f *fixture) env() map[string]string {
	return map[string]string{EnvURL: f.api.URL, EnvToken: testToken}
}

// The verbs through the command line: tables by default, the API's JSON
// with -json, exit 0.
func TestCLIVerbs(t *testing.T) {
	f := newFixture(t)
	f.block(t)
	env := f.env()
	code, out, errOut := runCLI(env, "blocks", "-user", "amy")
	if code != 0 || errOut != "" {
		t.Fatalf("blocks: %d %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "KIND  USER  NETWORK          COUNT  LIMIT  BLOCKED  EXPIRES") ||
		!strings.HasPrefix(lines[1], "pair  amy   198.51.100.0/24  2      2      yes      ") {
		t.Errorf("blocks table:\n%s", out)
	}
	code, out, _ = runCLI(env, "blocks", "-network", "198.51.100.0/24", "-json")
	var recs RecordsReply
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs.Records) != 2 {
		t.Errorf("blocks -json: %d %v\n%s", code, err, out)
	}
	code, out, _ = runCLI(env, "explain", "-user", "amy", "-client", "198.51.100.7", "-protocol", "imap")
	if code != 0 || !strings.Contains(out, "verdict  throttled by the pair limit") || !strings.Contains(out, "route    rule first-letter names mailhost01") {
		t.Errorf("explain: %d\n%s", code, out)
	}
	code, out, _ = runCLI(env, "lift", "-user", "amy")
	if code != 0 || !strings.HasPrefix(out, "lifted 2 records:\n") {
		t.Errorf("lift: %d\n%s", code, out)
	}
	if got := f.login(t, "amy", "right-amy", "198.51.100.7"); got != "OK" {
		t.Errorf("amy after lift: %q", got)
	}
	if code, out, _ = runCLI(env, "lift", "-user", "amy"); code != 0 || out != "nothing to lift: no count matches\n" {
		t.Errorf("lift again: %d %q", code, out)
	}
	if code, out, _ = runCLI(env, "flush", "amy"); code != 0 || out != "flushed 1 cached login of amy: the next login is checked on the backend\n" {
		t.Errorf("flush: %d %q", code, out)
	}
	code, out, _ = runCLI(env, "drain", "mailhost01", "-to", "mailhost02")
	if code != 0 || !strings.HasPrefix(out, "drained mailhost01: its new logins go to mailhost02\nDRAINED     TO          BY      SINCE\nmailhost01  mailhost02  oncall  ") {
		t.Errorf("drain: %d\n%s", code, out)
	}
	if code, out, _ = runCLI(env, "hold", "-user", "bob", "-wait", "3"); code != 0 || !strings.Contains(out, "HELD  WAIT  BY      SINCE\nbob   3 s   oncall") {
		t.Errorf("hold: %d\n%s", code, out)
	}
	if code, out, _ = runCLI(env, "controls", "-json"); code != 0 || !strings.Contains(out, `"backend": "mailhost01"`) || !strings.Contains(out, `"wait": 3`) {
		t.Errorf("controls -json: %d\n%s", code, out)
	}
	if code, out, _ = runCLI(env, "undrain", "-backend", "mailhost01"); code != 0 || !strings.HasPrefix(out, "undrained mailhost01") {
		t.Errorf("undrain: %d\n%s", code, out)
	}
	if code, out, _ = runCLI(env, "unhold", "bob"); code != 0 || !strings.HasPrefix(out, "released bob") || !strings.Contains(out, "no backend drained, no user held") {
		t.Errorf("unhold: %d\n%s", code, out)
	}
}

// Failures: one line on standard error, "admin: …", and a non-zero
// status: 2 for what the command line itself can tell is wrong, 1 for
// the server's refusal or absence.
func TestCLIFailures(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	wrong := map[string]string{EnvURL: f.api.URL, EnvToken: otherToken}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		code int
		want string
	}{
		{wrong, []string{"blocks"}, 1, "admin: 401 Unauthorized: invalid token\n"},
		{map[string]string{EnvURL: closed, EnvToken: testToken}, []string{"blocks"}, 1, "admin: cannot reach " + closed + ": "},
		{f.env(), []string{"drain", "mailhost09"}, 1, `admin: 400 Bad Request: backend: no backend named "mailhost09"`},
		{f.env(), []string{"lift", "-network", "300.1.2.0/24"}, 1, "admin: 400 Bad Request: network:"},
		{f.env(), []string{"blocks", "-color", "red"}, 2, "admin: blocks: flag provided but not defined: -color\n"},
		{f.env(), []string{"blocks", "-to", "x"}, 2, "admin: blocks takes no -to\n"},
		{f.env(), []string{"frobnicate"}, 2, `admin: "frobnicate" is not a verb`},
		{f.env(), []string{"explain", "-user", "amy"}, 2, "admin: explain needs -client\n"},
		{f.env(), []string{"lift"}, 2, "admin: lift needs -user, -network or both\n"},
		{f.env(), []string{"drain", "mailhost01", "mailhost02"}, 2, `admin: drain: unexpected argument "mailhost02"`},
		{map[string]string{EnvURL: f.api.URL}, []string{"blocks"}, 2, "admin: no token: set IMAPGATE_ADMIN_TOKEN"},
		{map[string]string{EnvToken: testToken}, []string{"blocks"}, 2, "admin: where is the admin API?"},
	} {
		code, out, errOut := runCLI(tc.env, tc.args...)
		if code != tc.code || out != "" || !strings.HasPrefix(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: %d, stdout %q, stderr %q; want %d, %q…", tc.args, code, out, errOut, tc.code, tc.want)
		}
	}
	if code, _, errOut := runCLI(f.env()); code != 2 || !strings.HasPrefix(errOut, "usage: imapgate admin VERB") {
		t.Errorf("no verb: %d %q", code, errOut)
	}
}

// The server is found from the settings it reads itself, the token also
// from a file.
func TestCLIFindsServer(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{EnvURL: "http://10.0.0.5:9181/"}, "http://10.0.0.5:9181"},
		{map[string]string{EnvListen: "0.0.0.0:9182", EnvMetricsListen: "127.0.0.1:9181"}, "http://127.0.0.1:9182"},
		{map[string]string{EnvMetricsListen: "[::]:9181"}, "http://127.0.0.1:9181"},
		{map[string]string{EnvMetricsListen: ":9181"}, "http://127.0.0.1:9181"},
		{map[string]string{EnvListen: "192.0.2.9:9182"}, "http://192.0.2.9:9182"},
	} {
		got, err := DefaultURL(func(k string) string { return tc.env[k] })
		if err != nil || got != tc.want {
			t.Errorf("DefaultURL(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte(testToken+",ci:abcdefghijklmnop-ci\n"), 0o600)
	tok, err := TokenFromEnv(func(k string) string { return map[string]string{EnvToken + "_FILE": path}[k] })
	if err != nil || tok != testToken {
		t.Errorf("TokenFromEnv from a file = %q, %v", tok, err)
	}
	if _, err := TokenFromEnv(func(k string) string { return map[string]string{EnvToken + "_FILE": path, EnvToken: "x"}[k] }); err == nil {
		t.Error("both the token and its file accepted")
	}
}
