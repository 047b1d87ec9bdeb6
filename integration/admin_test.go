package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the operator's scenarios (127.0.130.0/24, its own): the
// gateways, the Dovecots with their penalty on, the store; the attackers
// come from 127.0.131.0/24, the other users from the harness's client
// addresses.
const (
	ipAdminGateway   = "127.0.130.1"
	ipAdminGatewayA  = "127.0.130.2"
	ipAdminGatewayB  = "127.0.130.3"
	ipAdminBackend1  = "127.0.130.11"
	ipAdminBackend2  = "127.0.130.12"
	ipAdminReplica1  = "127.0.130.13"
	ipAdminReplica2  = "127.0.130.14"
	ipAdminRedis     = "127.0.130.60"
	adminAttackerNet = "127.0.131.0/24"
	// adminToken is the gateways' IMAPGATE_ADMIN_TOKEN: oncall is the name
	// the audit lines carry.
	adminToken = "oncall:it-admin-token-7f3a9c1e5b"
)

// adminAttacker is the i-th address of the attacked network.
func adminAttacker(i int) *net.Dialer { return fromAddr(fmt.Sprintf("127.0.131.%d", 10+i)) }

// adminSettings route amy to mailhost01 and everyone else to mailhost02
// (two Dovecots with their penalty on, at ip1 and ip2), lock a pair after
// 3 wrong passwords, and serve the admin API on the operations listener
// at gatewayIP:9181.
func adminSettings(gatewayIP, ip1, ip2 string) map[string]string {
	return map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=imap://%s:143,pop3://%s:110;mailhost02=imap://%s:143,pop3://%s:110", ip1, ip1, ip2, ip2),
		"IMAPGATE_FIRST_LETTER":    "a=mailhost01",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
		"IMAPGATE_LIMIT_PAIR":      "3",
		"IMAPGATE_METRICS_LISTEN":  gatewayIP + ":9181",
		"IMAPGATE_ADMIN_TOKEN":     adminToken,
	}
}

// cli is `imapgate admin …` run as an operator types it, with the
// environment an operator's shell would have.
type cli struct {
	t      *testing.T
	binary string
	url    string
	token  string
}

// run runs `imapgate admin args…` and returns its exit status and output.
func (c cli) run(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	cmd := exec.CommandContext(ctx, c.binary, append([]string{"admin"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TZ=UTC", "IMAPGATE_ADMIN_URL=" + c.url, "IMAPGATE_ADMIN_TOKEN=" + c.token}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("imapgate admin %s: %v", strings.Join(args, " "), err)
	}
	c.t.Logf("$ imapgate admin %s\n%s%s(exit %d)", strings.Join(args, " "), out.String(), errOut.String(), code)
	return code, out.String(), errOut.String()
}

// ok runs the command and fails the test unless it exits 0 with out
// containing every one of want.
func (c cli) ok(ctx context.Context, want []string, args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(ctx, args...)
	if code != 0 {
		c.t.Errorf("imapgate admin %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			c.t.Errorf("imapgate admin %s: output lacks %q:\n%s", strings.Join(args, " "), w, out)
		}
	}
	return out
}

func adminCLI(t *testing.T, e *harness.Env, gatewayIP string) cli {
	return cli{t: t, binary: e.Binary, url: "http://" + gatewayIP + ":9181", token: adminToken}
}

// blockAmy makes 3 wrong guesses for amy from the attacked network, an
// address each (Dovecot's penalty, per address, then slows none), so that
// the pair is blocked, and checks that amy's own login from that network
// is now refused.
func blockAmy(ctx context.Context, t *testing.T, e *harness.Env, gw *harness.Gateway, tag string) {
	t.Helper()
	for i := range 3 {
		pass := gw.AddSecret(fmt.Sprintf("%s-guess-%02d-amy", tag, i))
		if err := imapLogin(ctx, adminAttacker(i), gw.IMAPAddr, "amy", pass); err == nil || imapErrorText(err) != invalidText {
			t.Fatalf("guess %d: %v, want NO %s", i, err, invalidText)
		}
	}
	err := imapLogin(ctx, adminAttacker(50), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy"))
	if err == nil || imapErrorText(err) != throttledText {
		t.Fatalf("the owner from the attacked network after 3 guesses: %v, want NO %s", err, throttledText)
	}
}

// auditLine waits for imapgate's audit line of action with the result's
// prefix, at or after line from, and checks its fields.
func auditLine(ctx context.Context, t *testing.T, gw *harness.Gateway, from int, who, action, result string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, _, err := gw.Imapgate.WaitLine(ctx, from, func(line string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		return r.Get("msg") == "admin" && r.Get("action") == action && r.Get("who") == who && strings.HasPrefix(r.Get("result"), result)
	})
	if err != nil {
		t.Errorf("no audit line who=%q action=%s result=%s… in imapgate's log: %v", who, action, result, err)
	}
}

// TestOperatorAdmin: the operator's control plane through real nginx and
// Dovecot (its penalty on), with the built binary's `imapgate admin` as
// an operator types it. An account blocked by guesses from one network:
// explain says so and by which limit; lift lets the owner in from that
// network at once; flush makes the next login a check; drain answers
// mailhost01's user "try later" while mailhost02's logs in, and /readyz
// and the metric say so; undrain restores; hold makes nginx wait and ask
// again (WAIT) until unhold, when the same session logs in; a wrong token
// is refused; each action is one audit line.
func TestOperatorAdmin(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	startIsolatedBackend(t, "adminhost01", ipAdminBackend1, true)
	startIsolatedBackend(t, "adminhost02", ipAdminBackend2, true)
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{IP: ipAdminGateway, Env: adminSettings(ipAdminGateway, ipAdminBackend1, ipAdminBackend2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Errorf("gateway: %v", err)
		}
		if t.Failed() {
			t.Logf("imapgate log:\n%s", lastLines(gw.Imapgate.Output(), 60))
		}
	})
	ctx := ctxFor(t, 4*time.Minute)
	op := adminCLI(t, e, ipAdminGateway)
	from := gw.Imapgate.Len()

	blockAmy(ctx, t, e, gw, "admin")
	if out := op.ok(ctx, nil, "blocks", "-user", "amy"); !hasRow(out, "pair", "amy", adminAttackerNet, "3", "3", "yes") {
		t.Errorf("blocks: no blocked row for amy's pair:\n%s", out)
	}
	op.ok(ctx, []string{"verdict  throttled by the pair limit: too many wrong passwords for this user from this network",
		"limits   the pair limit refuses", "route    rule first-letter names mailhost01", "health   up"},
		"explain", "-user", "amy", "-client", "127.0.131.60", "-protocol", "imap")
	if out := op.ok(ctx, []string{"lifted 1 record:"}, "lift", "-user", "amy", "-network", adminAttackerNet); !hasRow(out, "pair", "amy", adminAttackerNet) {
		t.Errorf("lift: amy's pair not among the records lifted:\n%s", out)
	}
	if err := imapLogin(ctx, adminAttacker(60), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("the owner from the attacked network right after the lift: %v", err)
	}
	auditLine(ctx, t, gw, from, "oncall", "lift", "ok: 1 record lifted")
	auditLine(ctx, t, gw, from, "oncall", "explain", "ok: throttled by the pair limit")

	adminFlush(ctx, t, e, gw, op)
	adminDrain(ctx, t, e, gw, op)
	adminHold(ctx, t, e, gw, op)

	code, out, errOut := cli{t: t, binary: e.Binary, url: op.url, token: "oncall:not-the-token-at-all-0"}.run(ctx, "blocks")
	if code != 1 || out != "" || errOut != "admin: 401 Unauthorized: invalid token\n" {
		t.Errorf("a wrong token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	auditLine(ctx, t, gw, from, "", "blocks", "denied: invalid token")
	if strings.Contains(gw.Imapgate.Output(), "it-admin-token") || strings.Contains(gw.Imapgate.Output(), "not-the-token") {
		t.Error("imapgate's log holds an admin token")
	}
}

// adminFlush: a login answered from the cache, then flush, then the
// next login is checked on the backend again.
func adminFlush(ctx context.Context, t *testing.T, e *harness.Env, gw *harness.Gateway, op cli) {
	t.Helper()
	d := e.ClientDialer()
	pass := e.Password("mailhost02", "bob")
	login := func(what string) harness.LoginRecord {
		from := gw.Imapgate.Len()
		if err := imapLogin(ctx, d, gw.IMAPAddr, "bob", pass); err != nil {
			t.Fatalf("bob %s: %v", what, err)
		}
		rec, err := gw.WaitLogin(ctx, from, "bob", "imap")
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	login("first")
	if rec := login("again"); rec.Get("cached") != "true" {
		t.Errorf("bob's second login: cached=%s, want true", rec.Get("cached"))
	}
	op.ok(ctx, []string{"cached   imap on mailhost02 until"}, "explain", "-user", "bob", "-client", "127.0.2.200")
	op.ok(ctx, []string{"flushed 1 cached login of bob"}, "flush", "-user", "bob")
	if rec := login("after the flush"); rec.Get("cached") != "false" || rec.Get("outcome") != "ok" {
		t.Errorf("bob's login after the flush: cached=%s outcome=%s, want a check", rec.Get("cached"), rec.Get("outcome"))
	}
	auditLine(ctx, t, gw, 0, "oncall", "flush", "ok: 1 cached login flushed")
}

// adminDrain: mailhost01 drained, its user is told "try later" through
// nginx while mailhost02's logs in; /readyz and the metric show it;
// undrained, its user logs in again.
func adminDrain(ctx context.Context, t *testing.T, e *harness.Env, gw *harness.Gateway, op cli) {
	t.Helper()
	op.ok(ctx, []string{"drained mailhost01: its new logins are told to try later", "mailhost01  (try later)  oncall"}, "drain", "mailhost01")
	err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy"))
	if err == nil || imapErrorText(err) != temporaryText {
		t.Errorf("amy on the drained mailhost01: %v, want NO %s", err, temporaryText)
	}
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "erin", e.Password("mailhost02", "erin")); err != nil {
		t.Errorf("erin on mailhost02 during the drain: %v", err)
	}
	if body := readyzAt(t, ipAdminGateway+":9181"); !strings.HasPrefix(body, "ready (drained by the operator: mailhost01 (try later))") {
		t.Errorf("/readyz during the drain: %q", body)
	}
	if v, err := metricAt(ipAdminGateway+":9181", `imapgate_backend_drained{backend="mailhost01"}`); err != nil || v != 1 {
		t.Errorf("imapgate_backend_drained of mailhost01 during the drain: %v, %v", v, err)
	}
	op.ok(ctx, []string{"verdict  temporary: backend drained by the operator", "drain    mailhost01 drained by oncall"},
		"explain", "-user", "amy", "-client", "127.0.2.200")
	op.ok(ctx, []string{"undrained mailhost01", "no backend drained, no user held"}, "undrain", "mailhost01")
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("amy after the undrain: %v", err)
	}
	if v, err := metricAt(ipAdminGateway+":9181", `imapgate_backend_drained{backend="mailhost01"}`); err != nil || v != 0 {
		t.Errorf("imapgate_backend_drained of mailhost01 after the undrain: %v, %v", v, err)
	}
	auditLine(ctx, t, gw, 0, "oncall", "drain", "ok")
	auditLine(ctx, t, gw, 0, "oncall", "undrain", "ok")
}

// adminHold: a held user's login waits in nginx, which asks imapgate
// again every Auth-Wait seconds (WAIT: the same attempt, not a new one),
// and the client sees nothing until unhold, when the same session logs in.
func adminHold(ctx context.Context, t *testing.T, e *harness.Env, gw *harness.Gateway, op cli) {
	t.Helper()
	op.ok(ctx, []string{"holding zoe: nginx waits 1 s", "zoe   1 s   oncall"}, "hold", "-user", "zoe", "-wait", "1")
	from := gw.Imapgate.Len()
	done := make(chan error, 1)
	go func() { done <- imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "zoe", e.Password("mailhost02", "zoe")) }()
	// Three asks for the one login: nginx came back twice by itself.
	held := 0
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, err := gw.Imapgate.WaitLine(wctx, from, func(line string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		if r.Get("msg") == "login" && r.Get("user") == "zoe" {
			if r.Get("outcome") != "held" || r.Get("attempt") != "1" {
				t.Errorf("zoe held: outcome=%s attempt=%s, want held, 1 (nginx does not count a WAIT)", r.Get("outcome"), r.Get("attempt"))
			}
			held++
		}
		return held >= 3
	})
	if err != nil {
		t.Fatalf("nginx did not ask again for the held login: %d asks: %v", held, err)
	}
	select {
	case err := <-done:
		t.Fatalf("the held login ended while held: %v", err)
	default:
	}
	op.ok(ctx, []string{"released zoe"}, "unhold", "-user", "zoe")
	if err := <-done; err != nil {
		t.Errorf("zoe's held session after unhold: %v, want logged in", err)
	}
	// The session's last ask, after unhold: the same attempt, checked.
	_, _, err = gw.Imapgate.WaitLine(wctx, from, func(line string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		return r.Get("msg") == "login" && r.Get("user") == "zoe" && r.Get("outcome") == "ok" && r.Get("attempt") == "1"
	})
	if err != nil {
		t.Errorf("no outcome=ok attempt=1 login of zoe after unhold: %v", err)
	}
	auditLine(ctx, t, gw, 0, "oncall", "hold", "ok")
	auditLine(ctx, t, gw, 0, "oncall", "unhold", "ok")
}

// hasRow reports whether a table in out has a row starting with fields.
func hasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// readyzAt returns the /readyz body at addr.
func readyzAt(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAdminAcrossReplicas: two imapgates (each behind its own nginx)
// sharing their state through Debian's redis-server: a lift, a drain, a
// hold and a flush made through one replica's admin API take effect on
// the other.
func TestAdminAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	ctx := ctxFor(t, 4*time.Minute)
	redis, err := e.StartRedis(ctx, "redis-admin", ipAdminRedis, 6379)
	if err != nil {
		t.Fatal(err)
	}
	startIsolatedBackend(t, "adminhost03", ipAdminReplica1, true)
	startIsolatedBackend(t, "adminhost04", ipAdminReplica2, true)
	var gws []*harness.Gateway
	for _, ip := range []string{ipAdminGatewayA, ipAdminGatewayB} {
		settings := adminSettings(ip, ipAdminReplica1, ipAdminReplica2)
		settings["IMAPGATE_STATE_URL"] = redis.URL()
		gw, err := e.StartGateway(ctx, harness.GatewayConfig{IP: ip, Env: settings})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := gw.Close(); err != nil {
				t.Errorf("gateway %s: %v", gw.Name, err)
			}
			if t.Failed() {
				t.Logf("imapgate log (%s):\n%s", gw.Name, lastLines(gw.Imapgate.Output(), 40))
			}
		})
		gws = append(gws, gw)
	}
	// Their /metrics are on the operations listeners (waitShared asks the
	// auth listener).
	waitMetric(t, ipAdminGatewayA+":9181", "imapgate_state_shared", 1)
	waitMetric(t, ipAdminGatewayB+":9181", "imapgate_state_shared", 1)
	a, b := gws[0], gws[1]
	opA, opB := adminCLI(t, e, ipAdminGatewayA), adminCLI(t, e, ipAdminGatewayB)

	// Blocked through A, explained through B, lifted through A: the owner
	// gets in from the attacked network through B at once.
	blockAmy(ctx, t, e, a, "replicas")
	opB.ok(ctx, []string{"verdict  throttled by the pair limit"}, "explain", "-user", "amy", "-client", "127.0.131.70")
	opA.ok(ctx, []string{"lifted 1 record:"}, "lift", "-user", "amy", "-network", adminAttackerNet)
	if err := imapLogin(ctx, adminAttacker(70), b.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("the owner through B right after the lift on A: %v", err)
	}

	// Drained on A: B answers amy "try later" and shows the drain.
	opA.ok(ctx, []string{"drained mailhost01"}, "drain", "mailhost01")
	waitMetric(t, ipAdminGatewayB+":9181", `imapgate_backend_drained{backend="mailhost01"}`, 1)
	err = imapLogin(ctx, e.ClientDialer(), b.IMAPAddr, "amy", e.Password("mailhost02", "amy"))
	if err == nil || imapErrorText(err) != temporaryText {
		t.Errorf("amy through B with mailhost01 drained on A: %v, want NO %s", err, temporaryText)
	}
	if body := readyzAt(t, ipAdminGatewayB+":9181"); !strings.Contains(body, "drained by the operator: mailhost01") {
		t.Errorf("B's /readyz with the drain made on A: %q", body)
	}
	opB.ok(ctx, []string{"undrained mailhost01"}, "undrain", "mailhost01")
	waitMetric(t, ipAdminGatewayA+":9181", `imapgate_backend_drained{backend="mailhost01"}`, 0)
	if err := imapLogin(ctx, e.ClientDialer(), a.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("amy through A after the undrain on B: %v", err)
	}

	// Held on B: A tells nginx WAIT.
	opB.ok(ctx, []string{"holding zoe"}, "hold", "-user", "zoe", "-wait", "2")
	waitAnswer(ctx, t, a, "zoe", "WAIT")
	opA.ok(ctx, []string{"HELD", "zoe"}, "controls")
	opA.ok(ctx, []string{"released zoe"}, "unhold", "zoe")
	waitAnswer(ctx, t, b, "zoe", "OK")
	// Cached on B, flushed through A: B checks the next login again.
	bobOnB := func() harness.LoginRecord {
		from := b.Imapgate.Len()
		if err := imapLogin(ctx, e.ClientDialer(), b.IMAPAddr, "bob", e.Password("mailhost02", "bob")); err != nil {
			t.Fatalf("bob through B: %v", err)
		}
		rec, err := b.WaitLogin(ctx, from, "bob", "imap")
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	bobOnB()
	if rec := bobOnB(); rec.Get("cached") != "true" {
		t.Errorf("bob's second login through B: cached=%s, want true", rec.Get("cached"))
	}
	opA.ok(ctx, []string{"every imapgate sharing the state store was asked"}, "flush", "-user", "bob")
	if rec := bobOnB(); rec.Get("cached") != "false" {
		t.Errorf("bob through B after the flush through A: cached=%s, want a check", rec.Get("cached"))
	}
	auditLine(ctx, t, a, 0, "oncall", "drain", "ok")
	auditLine(ctx, t, b, 0, "oncall", "hold", "ok")
	auditLine(ctx, t, a, 0, "oncall", "flush", "ok")
}

// waitMetric waits a few seconds for series at addr to be want (a push
// through the store is not instant).
func waitMetric(t *testing.T, addr, series string, want float64) {
	t.Helper()
	var v float64
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if v, err = metricAt(addr, series); err == nil && v == want {
			return
		}
	}
	t.Errorf("%s at %s: %v, %v; want %v", series, addr, v, err, want)
}

// waitAnswer waits a few seconds for gw to answer user's right password
// with Auth-Status status (sent as nginx would, straight to imapgate).
func waitAnswer(ctx context.Context, t *testing.T, gw *harness.Gateway, user, status string) {
	t.Helper()
	var got string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		h, err := gw.AuthRequest(ctx, "imap", user, env.Password("mailhost02", user), map[string]string{"Client-IP": "127.0.2.201"})
		if err != nil {
			t.Fatal(err)
		}
		if got = h.Get("Auth-Status"); got == status {
			return
		}
	}
	t.Errorf("%s's login through %s: Auth-Status %q, want %q", user, gw.Name, got, status)
}
