package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth/state"
)

const adminTestToken = "oncall:admin-test-token-0123456789"

// adminEnv is a configuration with the admin API on the operations
// listener, plus kv.
func adminEnv(kv ...string) map[string]string {
	return testEnv(append([]string{"IMAPGATE_METRICS_LISTEN", "127.0.0.1:0", "IMAPGATE_ADMIN_TOKEN", adminTestToken}, kv...)...)
}

// Bad admin settings stop the start, each naming its variable, and never
// echo the token.
func TestAdminSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{adminEnv("IMAPGATE_ADMIN_TOKEN", "oncall:sh0rt"), "IMAPGATE_ADMIN_TOKEN: token 1: its secret is shorter than 16 characters"},
		{adminEnv("IMAPGATE_ADMIN_TOKEN", "on call:admin-test-token-0123456789"), "IMAPGATE_ADMIN_TOKEN: token 1: its name"},
		{adminEnv("IMAPGATE_METRICS_LISTEN", "<unset>"), "IMAPGATE_ADMIN_TOKEN: set, but neither IMAPGATE_ADMIN_LISTEN nor IMAPGATE_METRICS_LISTEN is"},
		{adminEnv("IMAPGATE_ADMIN_TOKEN", "<unset>", "IMAPGATE_ADMIN_LISTEN", "127.0.0.1:9182"), "IMAPGATE_ADMIN_LISTEN: set, but IMAPGATE_ADMIN_TOKEN is not"},
		{adminEnv("IMAPGATE_ADMIN_LISTEN", "9182"), "IMAPGATE_ADMIN_LISTEN: address 9182: missing port in address"},
		{adminEnv("IMAPGATE_ADMIN_URL", "ftp://x"), `IMAPGATE_ADMIN_URL: "ftp://x" is not an http:// or https:// URL`},
	} {
		_, err := build(tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		} else if strings.Contains(err.Error(), "sh0rt") || strings.Contains(err.Error(), "0123456789") {
			t.Errorf("the error %q holds the token", err)
		}
	}
	var out bytes.Buffer
	if code := runCheckConfig(context.Background(), envconfig.MapLookuper(adminEnv("IMAPGATE_ADMIN_TOKEN", "sh0rt")), nil, &out); code != exitConfig ||
		!strings.Contains(out.String(), "IMAPGATE_ADMIN_TOKEN: token 1") {
		t.Errorf("-check-config: %d %q", code, out.String())
	}
}

// The token has a _FILE form, and -print-config redacts it.
func TestAdminTokenSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte(adminTestToken+"\n"), 0o600)
	env := adminEnv("IMAPGATE_ADMIN_TOKEN", "<unset>", "IMAPGATE_ADMIN_TOKEN_FILE", path)
	svc, err := build(env)
	if err != nil || svc.admin == nil {
		t.Fatalf("token from a file: %v, admin %v", err, svc != nil && svc.admin != nil)
	}
	var out, errOut bytes.Buffer
	if code := runPrintConfig(context.Background(), envconfig.MapLookuper(adminEnv()), &out, &errOut); code != 0 {
		t.Fatalf("-print-config: %d %s", code, errOut.String())
	}
	if strings.Contains(out.String(), "admin-test-token") || !strings.Contains(out.String(), "IMAPGATE_ADMIN_TOKEN='"+redactedSecret+"'") {
		t.Errorf("-print-config does not redact the token:\n%s", out.String())
	}
}

// The API answers on the operations handler with the token, and not at
// all without IMAPGATE_ADMIN_TOKEN; a drain shows in /readyz and the
// metric, and a drained backend that is down leaves imapgate ready.
func TestAdminOnOpsListener(t *testing.T) {
	svc, err := build(adminEnv())
	if err != nil {
		t.Fatal(err)
	}
	ops := httptest.NewServer(svc.opsHandler())
	defer ops.Close()
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, ops.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, _ := call("GET", "/admin/v1/controls", "", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	if code, body := call("POST", "/admin/v1/drain", adminTestToken, `{"backend":"mailhost01","to":"mailhost02"}`); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	if _, body := call("GET", "/readyz", "", ""); !strings.Contains(body, "(drained by the operator: mailhost01 (to mailhost02))") ||
		strings.Contains(body, "mailhost01 imap") {
		t.Errorf("/readyz with mailhost01 drained (and not probed): %q", body)
	}
	if _, body := call("GET", "/metrics", "", ""); !strings.Contains(body, `imapgate_backend_drained{backend="mailhost01"} 1`) ||
		!strings.Contains(body, `imapgate_backend_drained{backend="mailhost02"} 0`) {
		t.Errorf("/metrics lacks the drained gauge:\n%s", grepLines(body, "drained"))
	}
	svc.controls.Undrain(context.Background(), "mailhost01")
	if _, body := call("GET", "/metrics", "", ""); !strings.Contains(body, `imapgate_backend_drained{backend="mailhost01"} 0`) {
		t.Errorf("undrained: %s", grepLines(body, "drained"))
	}

	off, err := build(adminEnv("IMAPGATE_ADMIN_TOKEN", "<unset>"))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	off.opsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/admin/v1/controls", nil))
	if rec.Code != http.StatusNotFound || off.admin != nil {
		t.Errorf("admin off: %d", rec.Code)
	}
	if _, ok := off.controls.(*state.LocalControls); !ok {
		t.Errorf("controls without a store: %T", off.controls)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
