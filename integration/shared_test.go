package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the shared-state scenario (127.0.40.0/24 is the limits').
const (
	ipSharedBackend = "127.0.40.14"
	ipSharedRedis   = "127.0.40.60"
	ipSharedGW1     = "127.0.40.24"
	ipSharedGW2     = "127.0.40.25"
)

// spreadGuesses makes n distinct wrong IMAP logins for user at once, the
// i-th through gws[i%len(gws)] from 127.0.40.(150+i): one network, but an
// address each, as an attacker rotating addresses would (Dovecot's
// penalty, kept per address, then slows none of them). It returns the
// answers that were neither a refusal nor "try later".
func spreadGuesses(ctx context.Context, gws []*harness.Gateway, user, tag string, n int) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var odd []error
	for i := range n {
		gw := gws[i%len(gws)]
		wg.Go(func() {
			pass := gw.AddSecret(fmt.Sprintf("%s-%02d-%s", tag, i, user))
			err := imapLogin(ctx, fromAddr(fmt.Sprintf("127.0.40.%d", 150+i)), gw.IMAPAddr, user, pass)
			if err == nil || !refused(err) {
				mu.Lock()
				odd = append(odd, fmt.Errorf("%s guess %d through %s: %v", user, i, gw.Name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return odd
}

// readyz returns imapgate's /readyz body.
func readyz(t *testing.T, gw *harness.Gateway) string {
	t.Helper()
	resp, err := http.Get("http://" + gw.AuthAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitShared waits until every gateway's imapgate_state_shared is want.
func waitShared(t *testing.T, gws []*harness.Gateway, want float64) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ok := true
		for _, gw := range gws {
			ok = ok && scrape(t, gw)["imapgate_state_shared"] == want
		}
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("imapgate_state_shared is not %v on every gateway after 15 s", want)
		}
	}
}

// TestSharedStateTwoGateways: two imapgates (each behind its own nginx)
// share their guessing limits through Debian's redis-server: guesses
// spread over both reach Dovecot no more than one imapgate would let
// them; with the store stopped every request is still answered, limits
// hold in each process and the blocks already known stay; when the store
// returns, sharing resumes.
func TestSharedStateTwoGateways(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	ctx := ctxFor(t, 4*time.Minute)
	redis, err := e.StartRedis(ctx, "redis-shared", ipSharedRedis, 6379)
	if err != nil {
		t.Fatal(err)
	}
	be := startIsolatedBackend(t, "mailhost44", ipSharedBackend, true)
	settings := map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost44=" + ipSharedBackend,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost44",
		"IMAPGATE_STATE_URL":       redis.URL(),
	}
	var gws []*harness.Gateway
	for _, ip := range []string{ipSharedGW1, ipSharedGW2} {
		gw, err := e.StartGateway(ctx, harness.GatewayConfig{IP: ip, Env: settings})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := gw.Close(); err != nil {
				t.Errorf("gateway %s: %v", gw.Name, err)
			}
		})
		gws = append(gws, gw)
	}
	waitShared(t, gws, 1)
	offset := be.LogOffset()
	refusals := func(user string) int {
		return dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == user })
	}

	// Shared: 14 guesses at once over both reach Dovecot at most 10 times.
	for _, err := range spreadGuesses(ctx, gws, "amy", "shared", 14) {
		t.Error(err)
	}
	if n := refusals("amy"); n > 10 {
		t.Errorf("14 guesses spread over two imapgates reached Dovecot %d times, want at most 10", n)
	}
	if err := imapLogin(ctx, e.ClientDialer(), gws[1].IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("the owner from another network: %v", err)
	}
	sharedStoreDown(ctx, t, e, redis, gws, refusals)
	// Back: sharing resumes.
	if err := redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitShared(t, gws, 1)
	for _, err := range spreadGuesses(ctx, gws, "erin", "resumed", 14) {
		t.Error(err)
	}
	if n := refusals("erin"); n > 10 {
		t.Errorf("once the store was back, 14 guesses over two imapgates reached Dovecot %d times, want at most 10", n)
	}
}

// sharedStoreDown stops the store mid-attack: every request is answered,
// each imapgate holds its own limits, the block on amy stays, and a user
// gets in; /readyz and the metrics say degraded, the log says so once.
func sharedStoreDown(ctx context.Context, t *testing.T, e *harness.Env, redis *harness.Redis, gws []*harness.Gateway, refusals func(string) int) {
	t.Helper()
	if err := redis.Stop(); err != nil {
		t.Fatal(err)
	}
	amyBefore := refusals("amy")
	for _, err := range spreadGuesses(ctx, gws, "zoe", "alone", 24) {
		t.Error(err)
	}
	for _, err := range spreadGuesses(ctx, gws, "amy", "blocked", 4) {
		t.Error(err)
	}
	if err := imapLogin(ctx, e.ClientDialer(), gws[0].IMAPAddr, "bob", e.Password("mailhost02", "bob")); err != nil {
		t.Errorf("a user's login with the store down: %v", err)
	}
	if n := refusals("zoe"); n > 20 {
		t.Errorf("with the store down, 24 guesses over two imapgates reached Dovecot %d times, want at most 10 each", n)
	}
	if n := refusals("amy"); n != amyBefore {
		t.Errorf("with the store down, amy's blocked pair got %d more checks", n-amyBefore)
	}
	waitShared(t, gws, 0)
	for _, gw := range gws {
		if body := readyz(t, gw); !strings.Contains(body, "degraded") {
			t.Errorf("%s /readyz with the store down: %q", gw.Name, body)
		}
		n := 0
		for _, l := range gw.Imapgate.Lines() {
			if strings.Contains(l, "state store unreachable") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s logged the store's loss %d times, want once", gw.Name, n)
		}
	}
}
