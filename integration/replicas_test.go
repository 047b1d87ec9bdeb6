package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// TestReplicatedSharedState: three imapgate containers and a Redis
// container on a Docker network, behind nginx's mail proxy asking an
// nginx http {} upstream that spreads auth_http over the three (the
// README's multi-replica setup). 40 distinct wrong passwords for one
// account from one network, spread round-robin, reach Dovecot at most 10
// times, while the owner logs in from another network; one replica is
// killed and restarted mid-attack and finds the shared counts; the Redis
// container is stopped mid-attack and every request is still answered,
// with each replica's limits holding; Redis returns and sharing resumes.
func TestReplicatedSharedState(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	requireDocker(t)
	if os.Getenv(harness.EnvMode) == harness.ModeProcess || os.Getenv(harness.EnvImapgate) == harness.ImapgateContainer {
		// It starts its own containers whatever the mode: once per .ci/run
		// (its first pass, make test) proves as much as three times would.
		t.Skip("the replicated setup runs its own containers in every mode; it runs in the default pass")
	}
	ctx := ctxFor(t, 8*time.Minute)
	start := time.Now()
	r, err := e.StartReplicas(ctx, 3)
	if err != nil {
		t.Fatalf("replicated setup: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	t.Logf("replicated setup up in %v", time.Since(start).Round(time.Second))
	start = time.Now()
	waitReplicasShared(t, r, 1)
	offset := r.Dovecot.LogOffset()
	refusals := func(user string) int { return replicaRefusals(t, r, offset, user) }
	guess := func(user, tag string, from, n int) {
		for _, err := range guessVia(ctx, r.IMAPAddr, user, tag, from, n) {
			t.Error(err)
		}
	}

	guess("amy", "spread", 0, 12)
	if err := imapLogin(ctx, e.ClientDialer(), r.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("the owner from another network during the attack: %v", err)
	}
	// A replica killed mid-attack and started again finds the counts.
	if err := r.KillImapgate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	guess("amy", "spread", 12, 6)
	if err := r.StartImapgate(ctx, 1, ""); err != nil {
		t.Fatal(err)
	}
	waitReplicasShared(t, r, 1)
	guess("amy", "spread", 18, 12)
	if n := refusals("amy"); n > 10 {
		t.Errorf("30 guesses spread over three replicas (one restarted) reached Dovecot %d times, want at most 10", n)
	}
	replicasStoreDown(ctx, t, e, r, guess, refusals)
	if n := refusals("amy"); n > 10 {
		t.Errorf("40 guesses spread over three replicas reached Dovecot %d times, want at most 10", n)
	}
	t.Logf("scenario (after setup) took %v", time.Since(start).Round(time.Second))
}

// replicasStoreDown stops Redis mid-attack: every request is answered,
// each replica holds its own limits and the block it knew, a user gets
// in; then Redis returns and a new attack is shared again.
func replicasStoreDown(ctx context.Context, t *testing.T, e *harness.Env, r *harness.Replicas, guess func(string, string, int, int), refusals func(string) int) {
	t.Helper()
	if err := r.StopRedis(ctx); err != nil {
		t.Fatal(err)
	}
	guess("amy", "spread", 30, 10) // the 40 in all
	guess("zoe", "alone", 0, 36)
	if err := imapLogin(ctx, e.ClientDialer(), r.IMAPAddr, "bob", e.Password("mailhost02", "bob")); err != nil {
		t.Errorf("a user's login with Redis down: %v", err)
	}
	if n := refusals("zoe"); n > 30 {
		t.Errorf("with Redis down, 36 guesses over three replicas reached Dovecot %d times, want at most 10 a replica", n)
	}
	waitReplicasShared(t, r, 0)
	if err := r.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	waitReplicasShared(t, r, 1)
	guess("erin", "resumed", 0, 16)
	if n := refusals("erin"); n > 10 {
		t.Errorf("once Redis was back, 16 guesses over three replicas reached Dovecot %d times, want at most 10", n)
	}
}

// guessVia makes n distinct wrong IMAP logins for user through addr, 4 at
// a time, the i-th from 127.0.40.(150+from+i) (one network, an address
// each); nginx's upstream spreads them round-robin over the replicas.
func guessVia(ctx context.Context, addr, user, tag string, from, n int) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var odd []error
	sem := make(chan struct{}, 4)
	for i := from; i < from+n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d := fromAddr(fmt.Sprintf("127.0.40.%d", 150+i%100))
			err := imapLogin(ctx, d, addr, user, fmt.Sprintf("%s-%02d-%s", tag, i, user))
			if err == nil || !refused(err) {
				mu.Lock()
				odd = append(odd, fmt.Errorf("%s guess %d: %v", user, i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return odd
}

// replicaRefusals counts Dovecot's refusals of user's checks since
// offset, once a barrier login shows every earlier line is in.
func replicaRefusals(t *testing.T, r *harness.Replicas, offset int64, user string) int {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	e := requireEnv(t)
	if err := imapLogin(ctx, &net.Dialer{Timeout: 10 * time.Second}, r.Dovecot.IMAPAddr(), "dave", e.Password("mailhost02", "dave")); err != nil {
		t.Fatalf("barrier login: %v", err)
	}
	if _, err := r.Dovecot.WaitLog(ctx, offset, func(l string) bool { return strings.Contains(l, "Login: user=<dave>") }); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range r.Dovecot.LogSince(offset) {
		if strings.Contains(l, "passwd-file("+user+",") && strings.Contains(l, "Password mismatch") {
			n++
		}
	}
	return n
}

// waitReplicasShared waits until every running replica's
// imapgate_state_shared is want.
func waitReplicasShared(t *testing.T, r *harness.Replicas, want float64) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ok := true
		for i, p := range r.Imapgates {
			if p != nil {
				v, err := metricAt(r.GatewayAddr(i), "imapgate_state_shared")
				ok = ok && err == nil && v == want
			}
		}
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("imapgate_state_shared is not %v on every replica after 30 s", want)
		}
	}
}

// metricAt reads one series from the /metrics at addr.
func metricAt(addr, series string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(rest, 64)
		}
	}
	return 0, fmt.Errorf("no %s at %s", series, addr)
}
