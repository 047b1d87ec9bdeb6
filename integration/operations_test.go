package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Backends of single scenarios: TestMetricsAndReadiness stops and starts
// mailhost11; TestWrongPasswordNeverProxied counts mailhost12's log.
const (
	ipMailhost11 = "127.0.0.11"
	ipMailhost12 = "127.0.0.14"
)

// waitBackendLine waits for imapgate's "backend up" or "backend down" line
// about backend and proto, logged after line from.
func waitBackendLine(t *testing.T, gw *harness.Gateway, from int, msg, backend, proto string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, _, err := gw.Imapgate.WaitLine(ctx, from, func(line string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		return r.Get("msg") == msg && r.Get("backend") == backend && r.Get("protocol") == proto
	}); err != nil {
		t.Fatalf("imapgate did not log %q for %s %s: %v", msg, backend, proto, err)
	}
}

func getPath(t *testing.T, gw *harness.Gateway, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + gw.AuthAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestMetricsAndReadiness: /readyz turns unready when a backend
// stops and ready again when it returns, /metrics follows, and a login for
// the stopped backend is an outage (temporary), never a failed login.
func TestMetricsAndReadiness(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be := startIsolatedBackend(t, "mailhost11", ipMailhost11, false)
	gw := startGateway(t, map[string]string{
		// IMAP and POP3 only: no SMTP relay listens on this address.
		"IMAPGATE_BACKENDS":        "mailhost11=imap://" + ipMailhost11 + ":143,pop3://" + ipMailhost11 + ":110",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost11",
		"IMAPGATE_PROBE_INTERVAL":  "1s",
		"IMAPGATE_VERIFY_TIMEOUT":  "3s",
	})
	ctx := ctxFor(t, 3*time.Minute)
	waitBackendLine(t, gw, 0, "backend up", "mailhost11", "imap")
	waitBackendLine(t, gw, 0, "backend up", "mailhost11", "pop3")
	if code, body := getPath(t, gw, "/readyz"); code != 200 {
		t.Errorf("/readyz with every backend up: %d %q", code, body)
	}
	if code, _ := getPath(t, gw, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}

	pass := e.Password("mailhost02", "bob")
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "bob", pass); err != nil {
		t.Fatalf("login: %v", err)
	}
	if h, err := gw.AuthRequest(ctx, "pop3", "bob", "not-bobs", nil); err != nil || h.Get("Auth-Status") != pop3InvalidStatus {
		t.Fatalf("wrong password: %v %v", h, err)
	}
	m := scrape(t, gw)
	for series, min := range map[string]float64{
		`imapgate_requests_total{outcome="ok",protocol="imap"}`:                                                  1,
		`imapgate_requests_total{outcome="rejected",protocol="pop3"}`:                                            1,
		`imapgate_backend_login_duration_seconds_count{backend="mailhost11",outcome="ok",protocol="imap"}`:       1,
		`imapgate_backend_login_duration_seconds_count{backend="mailhost11",outcome="rejected",protocol="pop3"}`: 1,
		`imapgate_cache_lookups_total{result="miss"}`:                                                            2,
		`imapgate_backend_up{backend="mailhost11",protocol="imap"}`:                                              1,
		`imapgate_backend_up{backend="mailhost11",protocol="pop3"}`:                                              1,
	} {
		if m[series] < min {
			t.Errorf("%s = %v, want at least %v", series, m[series], min)
		}
	}

	from := gw.Imapgate.Len()
	if err := be.Stop(); err != nil {
		t.Fatal(err)
	}
	waitBackendLine(t, gw, from, "backend down", "mailhost11", "imap")
	if code, body := getPath(t, gw, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "mailhost11 imap") {
		t.Errorf("/readyz with mailhost11 stopped: %d %q", code, body)
	}
	if h, err := gw.AuthRequest(ctx, "imap", "dave", e.Password("mailhost02", "dave"), nil); err != nil || h.Get("Auth-Status") != imapTemporaryStatus {
		t.Errorf("login for a stopped backend: %v %v, want %q", h, err, imapTemporaryStatus)
	}
	m = scrape(t, gw)
	if m[`imapgate_backend_up{backend="mailhost11",protocol="imap"}`] != 0 || m[`imapgate_requests_total{outcome="temporary",protocol="imap"}`] < 1 {
		t.Errorf("metrics with mailhost11 stopped: up=%v temporary=%v",
			m[`imapgate_backend_up{backend="mailhost11",protocol="imap"}`], m[`imapgate_requests_total{outcome="temporary",protocol="imap"}`])
	}
	if m[`imapgate_requests_total{outcome="rejected",protocol="imap"}`] != 0 {
		t.Errorf("an outage was counted as a rejected login")
	}

	from = gw.Imapgate.Len()
	if err := be.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitBackendLine(t, gw, from, "backend up", "mailhost11", "imap")
	waitBackendLine(t, gw, from, "backend up", "mailhost11", "pop3")
	if code, body := getPath(t, gw, "/readyz"); code != 200 {
		t.Errorf("/readyz after mailhost11 came back: %d %q", code, body)
	}
	if m := scrape(t, gw); m[`imapgate_backend_up{backend="mailhost11",protocol="imap"}`] != 1 {
		t.Errorf("imapgate_backend_up after the restart: %v", m[`imapgate_backend_up{backend="mailhost11",protocol="imap"}`])
	}
}

// TestFail2banFilter: the shipped fail2ban filter, run by
// fail2ban's own fail2ban-regex on imapgate's real log (text and JSON),
// matches exactly the refused logins and names the client nginx saw, and
// never an outage or a successful login.
func TestFail2banFilter(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fail2ban-regex missing (integration/install-deps.sh installs fail2ban)")
		}
		t.Skip("fail2ban-regex missing; run integration/install-deps.sh")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	filter := filepath.Join(root, "cmd/imapgate/contrib/fail2ban-filter.conf")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t, 2*time.Minute)
			settings := seedSettings()
			// zoe's backend is a port nothing listens on: an outage.
			settings["IMAPGATE_BACKENDS"] += ";dead=imap://127.0.0.12:143,pop3://127.0.0.12:110"
			settings["IMAPGATE_FIRST_LETTER"] = "acfg=mailhost01;z=dead"
			settings["IMAPGATE_LOG_FORMAT"] = format
			gw := startGateway(t, settings)
			guesser := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.5.1")}}
			someone := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.6.1")}}
			wrong := gw.AddSecret("alice-wrong-password")
			if err := imapLogin(ctx, guesser, gw.IMAPAddr, "alice", wrong); err == nil {
				t.Fatal("wrong password accepted")
			}
			if err := pop3Login(ctx, guesser, gw.POP3Addr, "nobody-here", wrong, false); err == nil {
				t.Fatal("unknown user accepted")
			}
			if err := imapLogin(ctx, someone, gw.IMAPAddr, "alice", e.Password("mailhost01", "alice")); err != nil {
				t.Fatalf("right password: %v", err)
			}
			if err := imapLogin(ctx, someone, gw.IMAPAddr, "zoe", "whatever-zoe"); err == nil {
				t.Fatal("login for a dead backend accepted")
			}
			// Every line is in the log once imapgate has logged zoe's
			// outage, the last attempt.
			if _, _, err := gw.Imapgate.WaitLine(ctx, 0, func(l string) bool {
				return strings.Contains(l, "zoe") && strings.Contains(l, "temporary")
			}); err != nil {
				t.Fatal(err)
			}

			out, err := exec.CommandContext(ctx, f2b, "--print-all-matched", gw.Imapgate.LogPath, filter).CombinedOutput()
			if err != nil {
				t.Fatalf("fail2ban-regex: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`Lines: (\d+) lines, \d+ ignored, (\d+) matched`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("no summary in fail2ban-regex output:\n%s", out)
			}
			matched, _ := strconv.Atoi(string(m[2]))
			if matched != 2 {
				t.Errorf("filter matched %d lines, want 2 (the wrong password and the unknown user):\n%s", matched, out)
			}
			_, matchedLines, _ := strings.Cut(string(out), "Matched line(s):")
			matchedLines, _, _ = strings.Cut(matchedLines, "Missed line(s):")
			if strings.Contains(matchedLines, "127.0.6.1") {
				t.Errorf("filter matched a line of the client that logged in or met an outage:\n%s", out)
			}
			if strings.Count(matchedLines, "127.0.5.1") != 2 {
				t.Errorf("filter did not find the guesser's address in both lines:\n%s", out)
			}
		})
	}
}

// TestSIGHUPReloadsUsersFile: SIGHUP rereads the users file once it
// has held still; a broken file is logged and the last good table stays.
func TestSIGHUPReloadsUsersFile(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	users := writeFile(t, "users", "sam mailhost01\n")
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":   fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_USERS_FILE": users,
	})
	ctx := ctxFor(t, time.Minute)
	sam := e.Password("mailhost01", "sam") // the same on both hosts
	hangup := func(want func(harness.LoginRecord) bool) {
		t.Helper()
		from := gw.Imapgate.Len()
		if err := gw.Imapgate.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		_, at, err := gw.Imapgate.WaitLine(ctx, from, func(l string) bool {
			r := harness.LoginRecord(harness.ParseLogLine(l))
			return r.Get("msg") == "rereading the users file" && r.Get("reason") == "SIGHUP"
		})
		if err != nil {
			t.Fatalf("SIGHUP not acted on: %v", err)
		}
		if _, _, err := gw.Imapgate.WaitLine(ctx, at, func(l string) bool { return want(harness.LoginRecord(harness.ParseLogLine(l))) }); err != nil {
			t.Fatalf("no result line after the SIGHUP reload: %v", err)
		}
	}

	// In place, same size and mtime second: only SIGHUP is sure to see it.
	if err := os.WriteFile(users, []byte("sam mailhost02\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup(func(r harness.LoginRecord) bool { return r.Get("msg") == "users file loaded" })
	checkAuthServer(t, gw, "imap", "sam", sam, harness.IPMailhost02, "143")

	if err := os.WriteFile(users, []byte("sam nosuchbackend\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup(func(r harness.LoginRecord) bool { return strings.HasPrefix(r.Get("msg"), "users file not reloaded") })
	checkAuthServer(t, gw, "imap", "sam", sam, harness.IPMailhost02, "143")
}
