package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// startHostile serves addr with script until the test ends.
func startHostile(t *testing.T, addr string, script harness.Script) {
	t.Helper()
	h, err := harness.StartHostile(addr, script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
}

// usage is what imapgate uses, by its own /metrics.
type usage struct {
	rss, goroutines, fds float64
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %.0f goroutines, %.0f open fds", u.rss/(1<<20), u.goroutines, u.fds)
}

func usageOf(t *testing.T, gw *harness.Gateway) usage {
	t.Helper()
	m := scrape(t, gw)
	return usage{rss: m["process_resident_memory_bytes"], goroutines: m["go_goroutines"], fds: m["process_open_fds"]}
}

// Slack of "back to baseline": a few goroutines and descriptors come and
// go (workers waiting for the next connection, the scrape itself), and
// the Go runtime keeps some memory it has used for a while. A backend
// read without bounds costs gigabytes, a leak a goroutine per check.
const (
	slackGoroutines = 16
	slackFDs        = 16
	slackRSS        = 48 << 20
)

// checkBaseline waits up to 45 s for imapgate's goroutines, open
// descriptors and RSS to come back to base (after a crowd of connections
// imapgate hands the memory back 15 to 20 s after it has gone).
func checkBaseline(t *testing.T, gw *harness.Gateway, base usage) usage {
	t.Helper()
	var now usage
	back := func() bool {
		return now.goroutines <= base.goroutines+slackGoroutines && now.fds <= base.fds+slackFDs && now.rss <= base.rss+slackRSS
	}
	// Every 2 s, not more often: each scrape is a connection, and the
	// server keeps a worker goroutine for 10 s after its last one, so
	// frequent scrapes would keep a score of them alive.
	for range 23 {
		if now = usageOf(t, gw); back() {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if !back() {
		t.Errorf("imapgate did not come back to its baseline: %v, was %v", now, base)
	}
	t.Logf("imapgate: %v after, %v before", now, base)
	return now
}

// waitLoggedReason waits for imapgate's login line for user with the
// given reason, logged at or after line from.
func waitLoggedReason(t *testing.T, gw *harness.Gateway, from int, user string, reasons ...string) harness.LoginRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	line, _, err := gw.Imapgate.WaitLine(ctx, from, func(l string) bool {
		r := harness.LoginRecord(harness.ParseLogLine(l))
		if r.Get("msg") != "login" || r.Get("user") != user {
			return false
		}
		for _, want := range reasons {
			if r.Get("reason") == want {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Errorf("imapgate logged no login of %s with reason %q: %v", user, reasons, err)
		return nil
	}
	return harness.LoginRecord(harness.ParseLogLine(line))
}
