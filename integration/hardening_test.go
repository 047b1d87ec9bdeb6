package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// startIsolatedBackend starts a Dovecot of its own for one scenario, so
// that its log counts that scenario's logins only.
func startIsolatedBackend(t *testing.T, name, ip string, penalty bool) *harness.Backend {
	t.Helper()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: the harness cannot start backends")
	}
	start := e.StartExtraBackend
	if penalty {
		start = e.StartPenaltyBackend
	}
	be, err := start(ctxFor(t, 2*time.Minute), name, ip, "mailhost02")
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// dovecotCounts waits until every line the scenario caused is in be's log
// (a login of barrierUser is the barrier: Dovecot logs in order), then
// counts user's successful logins and failed password checks since offset.
func dovecotCounts(t *testing.T, be *harness.Backend, offset int64, user, barrierUser string) (logins, failures int) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	e := requireEnv(t)
	if err := imapLogin(ctx, e.ClientDialer(), be.IMAPAddr(), barrierUser, e.Password("mailhost02", barrierUser)); err != nil {
		t.Fatalf("barrier login on %s: %v", be.Name, err)
	}
	if _, err := be.WaitLog(ctx, offset, func(l string) bool { return strings.Contains(l, "Login: user=<"+barrierUser+">") }); err != nil {
		t.Fatal(err)
	}
	for _, l := range be.LogSince(offset) {
		if strings.Contains(l, "Login: user=<"+user+">") {
			logins++
		}
		if strings.Contains(l, "("+user+",") && strings.Contains(l, "Password mismatch") {
			failures++
		}
	}
	return logins, failures
}

// scrape returns imapgate's /metrics as series → value.
func scrape(t *testing.T, gw *harness.Gateway) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + gw.AuthAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			series[line[:i]] = v
		}
	}
	return series
}

// TestCacheAndCoalescing: 10 concurrent then 30 sequential
// identical logins cost the backend at most 2 logins, by Dovecot's own
// log; the metrics say how each was answered.
func TestCacheAndCoalescing(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be := startIsolatedBackend(t, "mailhost08", harness.IPMailhost08, false)
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost08=" + harness.IPMailhost08,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost08",
		// IMAPGATE_CACHE_TTL at its default.
	})
	ctx := ctxFor(t, 2*time.Minute)
	pass := e.Password("mailhost02", "bob")
	offset := be.LogOffset()

	ask := func() error {
		h, err := gw.AuthRequest(ctx, "imap", "bob", pass, nil)
		if err != nil {
			return err
		}
		if got := h.Get("Auth-Status"); got != "OK" {
			return fmt.Errorf("Auth-Status %q", got)
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() { errs <- ask() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent login: %v", err)
		}
	}
	for i := range 30 {
		if err := ask(); err != nil {
			t.Fatalf("sequential login %d: %v", i, err)
		}
	}
	// A client through nginx: its session costs nginx's proxied login,
	// imapgate's check comes from the cache.
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "bob", pass); err != nil {
		t.Fatalf("login through nginx: %v", err)
	}

	logins, _ := dovecotCounts(t, be, offset, "bob", "dave")
	// 1 check at most twice (if the concurrent ones did not all overlap)
	// plus nginx's one proxied login.
	if checks := logins - 1; checks > 2 || checks < 1 {
		t.Errorf("41 logins cost Dovecot %d checks (and 1 proxied login), want 1 or 2", checks)
	}
	t.Logf("41 identical logins: %d backend logins in Dovecot's log (1 of them nginx's proxied session)", logins)

	m := scrape(t, gw)
	checks := m[`imapgate_backend_login_duration_seconds_count{backend="mailhost08",outcome="ok",protocol="imap"}`]
	hits := m[`imapgate_cache_lookups_total{result="hit"}`]
	coalesced := m[`imapgate_checks_coalesced_total`]
	if m[`imapgate_requests_total{outcome="ok",protocol="imap"}`] != 41 || checks < 1 || checks > 2 || checks+coalesced+hits != 41 {
		t.Errorf("metrics: %v requests ok, %v checks, %v coalesced, %v cache hits; want 41 = checks + coalesced + hits",
			m[`imapgate_requests_total{outcome="ok",protocol="imap"}`], checks, coalesced, hits)
	}
	if m[`imapgate_checks_in_flight`] != 0 {
		t.Errorf("checks in flight after the run: %v", m[`imapgate_checks_in_flight`])
	}
}

// TestGuessingLimits: 40 distinct wrong passwords for one
// account from one network reach Dovecot at most 10 times, while the owner
// logs in through nginx from another network; a stale password retried
// counts once; Auth-Wait grows and stops at the 10th attempt, and a
// throttled attempt gets none (nginx ends the session).
func TestGuessingLimits(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be := startIsolatedBackend(t, "mailhost09", harness.IPMailhost09, false)
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost09=" + harness.IPMailhost09,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost09",
		// IMAPGATE_LIMIT_* at their defaults.
	})
	ctx := ctxFor(t, 2*time.Minute)
	offset := be.LogOffset()
	const attacker = "203.0.113.66" // only a Client-IP header: nothing is sent there

	for i := range 40 {
		h, err := gw.AuthRequest(ctx, "imap", "amy", fmt.Sprintf("guess-%02d-amy", i), map[string]string{"Client-IP": attacker})
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Get("Auth-Status"); got != imapInvalidStatus && got != imapThrottledStatus {
			t.Fatalf("guess %d: Auth-Status %q", i, got)
		}
		if i >= 10 && h.Get("Auth-Wait") != "" {
			t.Errorf("guess %d past the limit: Auth-Wait %q, want none (nginx ends the session)", i, h.Get("Auth-Wait"))
		}
	}
	// The owner, from another network, through nginx, over IMAP and POP3.
	owner := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.4.1")}}
	pass := e.Password("mailhost02", "amy")
	if err := imapLogin(ctx, owner, gw.IMAPAddr, "amy", pass); err != nil {
		t.Errorf("owner's IMAP login during the attack: %v", err)
	}
	if err := pop3Login(ctx, owner, gw.POP3Addr, "amy", pass, false); err != nil {
		t.Errorf("owner's POP3 login during the attack: %v", err)
	}

	// A phone retrying one stale password, then the new one: not locked.
	for range 20 {
		if h, err := gw.AuthRequest(ctx, "imap", "erin", "erin-old-password", map[string]string{"Client-IP": "198.51.100.20"}); err != nil || h.Get("Auth-Status") != imapInvalidStatus {
			t.Fatalf("stale password: %v %v", h, err)
		}
	}
	h, err := gw.AuthRequest(ctx, "imap", "erin", e.Password("mailhost02", "erin"), map[string]string{"Client-IP": "198.51.100.20"})
	if err != nil || h.Get("Auth-Status") != "OK" {
		t.Errorf("right password after one stale password retried 20 times: %v %v", h, err)
	}
	// nginx closes the session once Auth-Wait is no longer sent.
	h, err = gw.AuthRequest(ctx, "imap", "zoe", "wrong-zoe", map[string]string{"Auth-Login-Attempt": "10", "Client-IP": "198.51.100.21"})
	if err != nil || h.Get("Auth-Status") != imapInvalidStatus || h.Get("Auth-Wait") != "" {
		t.Errorf("10th attempt of a session: %v %v, want no Auth-Wait", h, err)
	}

	_, failures := dovecotCounts(t, be, offset, "amy", "dave")
	if failures > 10 {
		t.Errorf("40 guesses reached Dovecot %d times, want at most 10", failures)
	}
	t.Logf("40 distinct wrong passwords from one network: %d reached Dovecot", failures)
	_, stale := dovecotCounts(t, be, offset, "erin", "dave")
	if stale > 20 {
		t.Errorf("stale password reached Dovecot %d times", stale)
	}

	m := scrape(t, gw)
	if got := m[`imapgate_throttled_total{limit="pair"}`]; got != 30 {
		t.Errorf("imapgate_throttled_total{limit=pair} = %v, want 30", got)
	}
	_, _, err = gw.Imapgate.WaitLine(ctx, 0, func(line string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		return r.Get("outcome") == "throttled" && r.Get("user") == "amy" && r.Get("client") == attacker
	})
	if err != nil {
		t.Errorf("no outcome=throttled line for the attacker: %v", err)
	}
}

// TestDovecotPenaltyNotTriggeredPastLimit: with Dovecot's
// per-IP auth penalty on, as Dovecot ships, a guesser's attempts past the
// limit never reach Dovecot, and those that do are charged to the
// guesser's own address (imapgate forwards it: IMAP ID x-originating-ip,
// POP3 XCLIENT), not to imapgate's, which every user's check shares. The
// latencies are measured by make bench, not asserted here.
func TestDovecotPenaltyNotTriggeredPastLimit(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be := startIsolatedBackend(t, "mailhost10", harness.IPMailhost10, true)
	gw := startGateway(t, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost10=" + harness.IPMailhost10,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost10",
		"IMAPGATE_LIMIT_PAIR":      "3",
		// Dovecot's penalty delays a check by up to 15 s.
		"IMAPGATE_VERIFY_TIMEOUT": "30s",
	})
	ctx := ctxFor(t, 3*time.Minute)
	offset := be.LogOffset()
	const attacker, owner = "203.0.113.77", "198.51.100.30"
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			gw.AuthRequest(ctx, "imap", "amy", fmt.Sprintf("penalty-guess-%02d", i), map[string]string{"Client-IP": attacker})
		})
	}
	wg.Wait()
	for _, proto := range []string{"imap", "pop3"} {
		start := time.Now()
		h, err := gw.AuthRequest(ctx, proto, "bob", e.Password("mailhost02", "bob"), map[string]string{"Client-IP": owner})
		if err != nil || h.Get("Auth-Status") != "OK" {
			t.Fatalf("legitimate %s check after the guesses: %v %v", proto, h, err)
		}
		t.Logf("legitimate %s check after 20 concurrent guesses: %v", proto, time.Since(start).Round(time.Millisecond))
	}
	_, failures := dovecotCounts(t, be, offset, "amy", "dave")
	if failures > 3 {
		t.Errorf("%d guesses reached Dovecot, want at most IMAPGATE_LIMIT_PAIR=3", failures)
	}
	var charged, ownerIMAP, ownerPOP3 int
	for _, l := range be.LogSince(offset) {
		switch {
		case strings.Contains(l, "user=<amy>") && strings.Contains(l, "rip="+attacker+","):
			charged++
		case !strings.Contains(l, "Login: user=<bob>") || !strings.Contains(l, "rip="+owner+","):
		case strings.Contains(l, "imap-login:"):
			ownerIMAP++
		case strings.Contains(l, "pop3-login:"):
			ownerPOP3++
		}
	}
	if charged == 0 || ownerIMAP != 1 || ownerPOP3 != 1 {
		t.Errorf("Dovecot saw the guesses from the guesser's address %d times (want > 0) and the owner's IMAP and POP3 checks from the owner's %d and %d times (want 1 each):\n%s",
			charged, ownerIMAP, ownerPOP3, strings.Join(be.LogSince(offset), "\n"))
	}
}
