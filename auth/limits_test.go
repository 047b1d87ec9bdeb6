package auth

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

func testLimiter(l Limits) (*limiter, *time.Time) {
	now := time.Unix(1_700_000_000, 0)
	lim := newLimiter(l)
	lim.now = func() time.Time { return now }
	return lim, &now
}

// check asks begin about a password not tried before, and ends the check
// at once: the limits as a login that is about to be checked sees them.
func (l *limiter) check(user string, ip netip.Addr) (bool, string, Reason) {
	const fresh = 1 << 63
	blocked, limit, why := l.begin(user, ip, fresh)
	if !blocked {
		l.end(user, ip, fresh)
	}
	return blocked, limit, why
}

var (
	attacker  = netip.MustParseAddr("203.0.113.50")
	attacker2 = netip.MustParseAddr("203.0.113.51") // same /24
	owner     = netip.MustParseAddr("198.51.100.7")
	stranger  = netip.MustParseAddr("192.0.2.99")
)

func TestLimiterCountsDistinctPasswords(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 3, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	// A phone retrying one stale password counts once.
	for range 20 {
		lim.failure("alice", attacker, 1)
	}
	if blocked, _, _ := lim.check("alice", attacker); blocked {
		t.Fatal("one password retried 20 times blocked the pair")
	}
	lim.failure("alice", attacker2, 2) // same /24: same network
	lim.failure("alice", attacker, 3)
	if blocked, limit, why := lim.check("alice", attacker); !blocked || limit != "pair" || why == "" {
		t.Errorf("three distinct wrong passwords did not block the pair")
	}
	if blocked, _, _ := lim.check("alice", owner); blocked {
		t.Error("an attack from one network blocked the user everywhere")
	}
	if blocked, _, _ := lim.check("bob", attacker); blocked {
		t.Error("the pair's limit blocked another user")
	}
}

func TestLimiterCountsChecksInFlight(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 3, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	// A guesser sends passwords at once: only PerPair get through while
	// none has been answered yet.
	let := 0
	for i := range 10 {
		if blocked, _, _ := lim.begin("alice", attacker, uint64(i)); !blocked {
			let++
		}
	}
	if let != 3 {
		t.Errorf("%d concurrent guesses let through, want 3", let)
	}
	// The same password again (a client's parallel connections) is
	// let through: it adds no new password.
	if blocked, _, _ := lim.begin("alice", attacker, 1); blocked {
		t.Error("a password already being checked was refused")
	}
	for i := range 3 {
		lim.end("alice", attacker, uint64(i))
	}
	lim.end("alice", attacker, 1)
	if len(lim.pending) != 0 || len(lim.pendingDistinct) != 0 {
		t.Errorf("pending checks left after every end: %v %v", lim.pending, lim.pendingDistinct)
	}
}

func TestLimiterWindow(t *testing.T) {
	lim, now := testLimiter(Limits{PerPair: 2, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	lim.failure("alice", attacker, 1)
	lim.failure("alice", attacker, 2)
	if blocked, _, _ := lim.check("alice", attacker); !blocked {
		t.Fatal("not blocked")
	}
	*now = now.Add(59 * time.Second)
	if blocked, _, _ := lim.check("alice", attacker); !blocked {
		t.Error("unblocked before the window ended")
	}
	*now = now.Add(time.Second)
	if blocked, _, _ := lim.check("alice", attacker); blocked {
		t.Error("still blocked after a quiet window")
	}
}

func TestLimiterSparesTheOwner(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 100, PerUser: 5, PerNetwork: 8, Window: time.Minute, Remember: time.Hour})
	lim.success("alice", owner)
	// A distributed attack on alice: five networks, one guess each.
	for i := range 5 {
		lim.failure("alice", netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), uint64(i))
	}
	if blocked, _, _ := lim.check("alice", stranger); !blocked {
		t.Error("user limit did not block a network alice never used")
	}
	if blocked, _, _ := lim.check("alice", owner); blocked {
		t.Error("the owner's network was locked out by an attack elsewhere")
	}
	// Password spraying from one network: many users, one guess each.
	for i := range 8 {
		lim.failure(fmt.Sprintf("user%d", i), attacker, uint64(100+i))
	}
	if blocked, _, _ := lim.check("carol", attacker); !blocked {
		t.Error("network limit did not block the spraying network")
	}
	lim.success("dave", attacker2) // a real user behind the same NAT, known before
	if blocked, _, _ := lim.check("dave", attacker); blocked {
		t.Error("a user who logged in from the network was locked out by the network limit")
	}
}

func TestLimiterSuccessClearsThePair(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 2, PerUser: 100, PerNetwork: 100, Window: time.Minute, Remember: time.Hour})
	lim.failure("alice", owner, 1)
	lim.success("alice", owner)
	lim.failure("alice", owner, 2)
	if blocked, _, _ := lim.check("alice", owner); blocked {
		t.Error("typos before a successful login still count")
	}
}

func TestLimiterTrustedNetworks(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 1, PerUser: 1, PerNetwork: 1, Window: time.Minute,
		Trusted: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}})
	for i := range 10 {
		lim.failure("alice", attacker, uint64(i))
	}
	if blocked, _, _ := lim.check("alice", attacker); blocked {
		t.Error("a trusted network was blocked")
	}
	if blocked, _, _ := lim.check("alice", stranger); blocked {
		t.Error("failures from a trusted network were counted")
	}
}

func TestLimiterBounded(t *testing.T) {
	lim, _ := testLimiter(Limits{PerPair: 5, PerUser: 5, PerNetwork: 5, Window: time.Minute, MaxTracked: 100})
	for i := range 1000 {
		lim.failure(fmt.Sprintf("user%d", i), netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), uint64(i))
	}
	if n := len(lim.records); n > 100 {
		t.Errorf("%d records kept, bound is 100", n)
	}
}

func TestNetwork(t *testing.T) {
	for ip, want := range map[string]string{
		"203.0.113.50":          "203.0.113.0/24",
		"2001:db8:1:2::7":       "2001:db8:1::/48",
		"2001:db8:1:ffff::1234": "2001:db8:1::/48",
	} {
		if got := network(netip.MustParseAddr(ip)).String(); got != want {
			t.Errorf("network(%s) = %s, want %s", ip, got, want)
		}
	}
	if network(netip.Addr{}).IsValid() {
		t.Error("no address has a network")
	}
}

// TestHandlerLimitsGuessing: 40 distinct wrong
// passwords for one account from one network reach the backend at most
// PerPair times, while the owner logs in from another network.
func TestHandlerLimitsGuessing(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.Rejected}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	limits := DefaultLimits
	h.Limits = &limits

	for i := range 40 {
		w := serve(t, h, nginxHeader("Auth-Pass", fmt.Sprintf("guess%d", i), "Client-IP", "203.0.113.50"))
		if got := w.Header().Get("Auth-Status"); got != imapInvalid && got != imapThrottled {
			t.Fatalf("guess %d: Auth-Status %q", i, got)
		}
	}
	if n := len(v.calls); n > limits.PerPair {
		t.Errorf("40 guesses reached the backend %d times, want at most %d", n, limits.PerPair)
	}
	v.outcome = imapcheck.OK
	w := serve(t, h, nginxHeader("Client-IP", "198.51.100.7"))
	if got := w.Header().Get("Auth-Status"); got != "OK" {
		t.Errorf("the owner, from another network: Auth-Status %q", got)
	}
	if !bytes.Contains(log.Bytes(), []byte("outcome=throttled")) {
		t.Errorf("throttled attempts are not logged as such")
	}
	// Auth-Wait grows with the distinct wrong passwords, even at the
	// first attempt of a new session.
	w = serve(t, h, nginxHeader("Auth-Pass", "guess99", "Client-IP", "203.0.113.50"))
	if got := w.Header().Get("Auth-Wait"); got != "10" {
		t.Errorf("Auth-Wait for a throttled network = %q, want 10", got)
	}
}
