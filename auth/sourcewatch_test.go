package auth

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/imapgate/imapgate/imapcheck"
)

// sourceLogin is one login as the source watch sees it.
type sourceLogin struct {
	ip   string
	user string
}

// feed observes logins in order and returns the findings.
func feed(w *sourceWatch, trusted []netip.Prefix, logins []sourceLogin) []sourceFinding {
	var found []sourceFinding
	for _, l := range logins {
		if f, ok := w.observe(netip.MustParseAddr(l.ip), l.user, trusted); ok {
			found = append(found, f)
		}
	}
	return found
}

// spread returns n logins that cycle through ips and users.
func spread(n int, ips, users []string) []sourceLogin {
	out := make([]sourceLogin, n)
	for i := range out {
		out[i] = sourceLogin{ips[i%len(ips)], users[i%len(users)]}
	}
	return out
}

var fiveUsers = []string{"alice", "bob", "carol", "dave", "erin"}

func TestSourceWatch(t *testing.T) {
	gateway := []string{"172.20.0.1"}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		logins  []sourceLogin
		want    string // the finding, "" for none
	}{
		{"the Docker bridge's gateway for everyone", nil,
			spread(sourceWindow, gateway, fiveUsers), "172.20.0.1 100/100"},
		{"nginx's own loopback peer", nil,
			spread(sourceWindow, []string{"::ffff:127.0.0.1"}, fiveUsers), "127.0.0.1 100/100"},
		{"IPv6 unique local", nil,
			spread(sourceWindow, []string{"fd00::1"}, fiveUsers), "fd00::1 100/100"},
		{"a window not yet full", nil,
			spread(sourceWindow-1, gateway, fiveUsers), ""},
		{"one user's phone on a LAN", nil,
			spread(sourceWindow, gateway, []string{"alice"}), ""},
		{"four users are not enough", nil,
			spread(sourceWindow, gateway, fiveUsers[:4]), ""},
		{"many private clients, each its own address", nil,
			spread(sourceWindow, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}, fiveUsers), ""},
		{"one public address (a carrier's NAT)", nil,
			spread(sourceWindow, []string{"203.0.113.9"}, fiveUsers), ""},
		{"a trusted webmail", []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16")},
			spread(sourceWindow, gateway, fiveUsers), ""},
		// 9 in 10 from the gateway, the rest from five other private
		// addresses, which fill the other counters and then take one off
		// every counter twice: seen, with a count below the true 90.
		{"most, among other private addresses", nil,
			append(spread(90, gateway, fiveUsers), spread(10, []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"}, fiveUsers)...),
			"172.20.0.1 88/100"},
		{"exactly the share is not more than it", nil,
			append(spread(80, gateway, fiveUsers), spread(20, []string{"198.51.100.1"}, fiveUsers)...), ""},
		{"relayed SMTP carries no user", nil,
			spread(sourceWindow, gateway, []string{""}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w sourceWatch
			found := feed(&w, tt.trusted, tt.logins)
			var got []string
			for _, f := range found {
				got = append(got, fmt.Sprintf("%s %d/%d", f.addr, f.logins, f.of))
			}
			want := []string(nil)
			if tt.want != "" {
				want = []string{tt.want}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("findings %v, want %v", got, want)
			}
		})
	}
}

// TestSourceWatchOnce: the watch trips at most once per process, and a
// window that did not trip leaves nothing for the next one.
func TestSourceWatchOnce(t *testing.T) {
	var w sourceWatch
	gateway := []string{"172.20.0.1"}
	// A window of four users from the gateway, then a clean start: the
	// fifth user in the next window does not add up with them.
	logins := spread(sourceWindow, gateway, fiveUsers[:4])
	logins = append(logins, spread(sourceWindow, []string{"203.0.113.9"}, fiveUsers)...)
	if found := feed(&w, nil, logins); len(found) != 0 {
		t.Fatalf("findings %v, want none", found)
	}
	logins = spread(5*sourceWindow, gateway, fiveUsers)
	if found := feed(&w, nil, logins); len(found) != 1 {
		t.Fatalf("%d findings over five windows from the gateway, want 1", len(found))
	}
}

// TestSourceWatchConcurrent: logins observed at once from many goroutines
// trip the watch exactly once (run with -race).
func TestSourceWatchConcurrent(t *testing.T) {
	var w sourceWatch
	var mu sync.Mutex
	found := 0
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 * sourceWindow {
				if _, ok := w.observe(netip.MustParseAddr("172.20.0.1"), fiveUsers[(g+i)%len(fiveUsers)], nil); ok {
					mu.Lock()
					found++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if found != 1 {
		t.Errorf("%d findings, want 1", found)
	}
}

// TestSourceWatchAllocatesNothing: observing a login, suspect or not,
// allocates nothing (it is on every request's path).
func TestSourceWatchAllocatesNothing(t *testing.T) {
	var w sourceWatch
	ips := []netip.Addr{netip.MustParseAddr("172.20.0.1"), netip.MustParseAddr("10.0.0.7"),
		netip.MustParseAddr("10.0.0.8"), netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.10"),
		netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("203.0.113.9")}
	trusted := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	i := 0
	allocs := testing.AllocsPerRun(10*sourceWindow, func() {
		w.observe(ips[i%len(ips)], fiveUsers[i%len(fiveUsers)], trusted)
		i++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per login, want 0", allocs)
	}
}

// TestHandlerWarnsOfOneSource: through the handler, a window of logins
// from one private address logs one warning that names it and the fix.
func TestHandlerWarnsOfOneSource(t *testing.T) {
	var log bytes.Buffer
	h := newTestHandler(t, &fakeVerifier{outcome: imapcheck.OK}, &log)
	for i := range 3 * sourceWindow {
		serve(t, h, nginxHeader("Auth-User", fiveUsers[i%len(fiveUsers)], "Client-IP", "172.20.0.1"))
	}
	var warnings []string
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "one private address") {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
	for _, want := range []string{"client=172.20.0.1", "logins=100", "of=100", "IMAPGATE_TRUSTED_NETWORKS", "proxy_protocol"} {
		if !strings.Contains(warnings[0], want) {
			t.Errorf("warning has no %q: %s", want, warnings[0])
		}
	}
}
