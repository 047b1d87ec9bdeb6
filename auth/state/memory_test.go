package state

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var (
	ctx      = context.Background()
	attacker = NetworkOf(netip.MustParseAddr("203.0.113.50"))
	owner    = NetworkOf(netip.MustParseAddr("198.51.100.7"))
	stranger = NetworkOf(netip.MustParseAddr("192.0.2.99"))
)

func testMemory(l Limits) (*Memory, *time.Time) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory(l)
	m.now = func() time.Time { return now }
	return m, &now
}

// admits asks Begin about a password not tried before and ends the check
// at once: the limits as a login about to be checked sees them.
func admits(s Store, user string, network netip.Prefix) Kind {
	a := Attempt{User: user, Network: network, Fingerprint: 1 << 63}
	k := s.Begin(ctx, a, time.Time{})
	if k == 0 {
		s.End(ctx, a)
	}
	return k
}

func fail(s Store, user string, network netip.Prefix, fp uint64) int {
	return s.Failure(ctx, Attempt{User: user, Network: network, Fingerprint: fp})
}

func TestMemoryCountsDistinctPasswords(t *testing.T) {
	m, _ := testMemory(Limits{PerPair: 3, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	// A phone retrying one stale password counts once.
	for range 20 {
		fail(m, "alice", attacker, 1)
	}
	if k := admits(m, "alice", attacker); k != 0 {
		t.Fatal("one password retried 20 times blocked the pair")
	}
	fail(m, "alice", attacker, 2)
	if n := fail(m, "alice", attacker, 3); n != 3 {
		t.Errorf("pair count %d, want 3", n)
	}
	if k := admits(m, "alice", attacker); k != Pair {
		t.Errorf("three distinct wrong passwords: Begin says %v, want pair", k)
	}
	if k := m.Blocked(ctx, "alice", attacker); k != Pair {
		t.Errorf("Blocked says %v, want pair", k)
	}
	if k := admits(m, "alice", owner); k != 0 {
		t.Error("an attack from one network blocked the user everywhere")
	}
	if k := admits(m, "bob", attacker); k != 0 {
		t.Error("the pair's limit blocked another user")
	}
}

func TestMemoryCountsChecksInFlight(t *testing.T) {
	m, _ := testMemory(Limits{PerPair: 3, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	// A guesser sends passwords at once: only PerPair get through while
	// none has been answered yet.
	let := 0
	for i := range 10 {
		if m.Begin(ctx, Attempt{"alice", attacker, uint64(i)}, time.Time{}) == 0 {
			let++
		}
	}
	if let != 3 {
		t.Errorf("%d concurrent guesses let through, want 3", let)
	}
	if m.Blocked(ctx, "alice", attacker) != 0 {
		t.Error("checks in flight block a cached answer")
	}
	// The same password again (a client's parallel connections) is let
	// through: it adds no new password.
	if m.Begin(ctx, Attempt{"alice", attacker, 1}, time.Time{}) != 0 {
		t.Error("a password already being checked was refused")
	}
	for i := range 3 {
		m.End(ctx, Attempt{"alice", attacker, uint64(i)})
	}
	m.End(ctx, Attempt{"alice", attacker, 1})
	if len(m.pending) != 0 || len(m.pendingDistinct) != 0 {
		t.Errorf("pending checks left after every end: %v %v", m.pending, m.pendingDistinct)
	}
}

func TestMemoryWindow(t *testing.T) {
	m, now := testMemory(Limits{PerPair: 2, PerUser: 100, PerNetwork: 100, Window: time.Minute})
	fail(m, "alice", attacker, 1)
	fail(m, "alice", attacker, 2)
	if admits(m, "alice", attacker) == 0 {
		t.Fatal("not blocked")
	}
	*now = now.Add(59 * time.Second)
	if admits(m, "alice", attacker) == 0 {
		t.Error("unblocked before the window ended")
	}
	*now = now.Add(time.Second)
	if admits(m, "alice", attacker) != 0 {
		t.Error("still blocked after a quiet window")
	}
}

func TestMemorySparesTheOwner(t *testing.T) {
	m, _ := testMemory(Limits{PerPair: 100, PerUser: 5, PerNetwork: 8, Window: time.Minute, Remember: time.Hour})
	m.Success(ctx, "alice", owner)
	// A distributed attack on alice: five networks, one guess each.
	for i := range 5 {
		fail(m, "alice", NetworkOf(netip.AddrFrom4([4]byte{10, byte(i), 0, 1})), uint64(i))
	}
	if admits(m, "alice", stranger) != User {
		t.Error("user limit did not block a network alice never used")
	}
	if admits(m, "alice", owner) != 0 || m.Blocked(ctx, "alice", owner) != 0 {
		t.Error("the owner's network was locked out by an attack elsewhere")
	}
	// Password spraying from one network: many users, one guess each.
	for i := range 8 {
		fail(m, fmt.Sprintf("user%d", i), attacker, uint64(100+i))
	}
	if admits(m, "carol", attacker) != Network || m.Blocked(ctx, "carol", attacker) != Network {
		t.Error("network limit did not block the spraying network")
	}
	m.Success(ctx, "dave", attacker) // a real user behind the same NAT, known before
	if admits(m, "dave", attacker) != 0 {
		t.Error("a user who logged in from the network was locked out by the network limit")
	}
}

func TestMemorySuccessClearsThePair(t *testing.T) {
	m, _ := testMemory(Limits{PerPair: 2, PerUser: 100, PerNetwork: 100, Window: time.Minute, Remember: time.Hour})
	fail(m, "alice", owner, 1)
	m.Success(ctx, "alice", owner)
	fail(m, "alice", owner, 2)
	if admits(m, "alice", owner) != 0 {
		t.Error("typos before a successful login still count")
	}
}

// A flood of unrelated records cannot reset a count that is about to
// matter: at its bound, a kind drops level-1 records (one wrong password)
// first, and never a count of 2 or more for a newcomer.
func TestMemoryFloodKeepsHotCounts(t *testing.T) {
	const bound = 1000
	m, now := testMemory(Limits{PerPair: 10, PerUser: 30, PerNetwork: 100, Window: time.Minute, Remember: time.Hour, MaxTracked: bound})
	m.Success(ctx, "target", owner)
	for i := range 9 {
		fail(m, "target", attacker, uint64(i))
	}
	for i := range 250_000 {
		*now = now.Add(time.Microsecond)
		net := NetworkOf(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		fail(m, fmt.Sprintf("junk%d", i), net, uint64(1000+i))
	}
	for kind := Pair; kind <= Owner; kind++ {
		if n := m.Len(kind); n > bound {
			t.Errorf("%v: %d records kept, bound is %d", kind, n, bound)
		}
	}
	if n := fail(m, "target", attacker, 9); n != 10 {
		t.Errorf("after the flood, the attacked pair's 10th guess makes its count %d, want 10", n)
	}
	if k := admits(m, "target", attacker); k != Pair {
		t.Errorf("the 11th distinct guess: Begin says %v, want pair", k)
	}
	if k := admits(m, "target", owner); k != 0 {
		t.Errorf("the owner's network: Begin says %v, want admitted", k)
	}
	// A full table of level-1 junk still takes a new attack's records.
	if n := fail(m, "newtarget", stranger, 1); n != 1 {
		t.Errorf("a new pair's first failure during the flood counted %d", n)
	}
}

// When every record outranks a newcomer, the newcomer is not kept, and
// expired records make room again.
func TestMemoryFullOfHotCounts(t *testing.T) {
	m, now := testMemory(Limits{PerPair: 10, PerUser: 30, PerNetwork: 100, Window: time.Minute, MaxTracked: 3})
	for u := range 3 {
		for fp := range 2 {
			fail(m, fmt.Sprint("hot", u), attacker, uint64(10*u+fp))
		}
	}
	if n := fail(m, "new", stranger, 99); n != 0 {
		t.Errorf("a newcomer displaced a count of 2: got count %d", n)
	}
	*now = now.Add(time.Minute)
	if n := fail(m, "new", stranger, 99); n != 1 {
		t.Errorf("after the window the newcomer was not kept: count %d", n)
	}
}

func TestMemoryRecordsAndLift(t *testing.T) {
	m, _ := testMemory(Limits{PerPair: 2, PerUser: 100, PerNetwork: 100, Window: time.Minute, Remember: time.Hour})
	fail(m, "alice", attacker, 1)
	fail(m, "alice", attacker, 2)
	m.Success(ctx, "bob", owner)
	recs, err := m.Records(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[Kind]Record{}
	for _, r := range recs {
		found[r.Kind] = r
	}
	if r := found[Pair]; !r.Blocked || r.Failures != 2 || r.User != "alice" || r.Network != attacker {
		t.Errorf("pair record %+v", r)
	}
	if r := found[Owner]; r.User != "bob" || r.Network != owner {
		t.Errorf("owner record %+v", r)
	}
	if len(recs) != 4 {
		t.Errorf("%d records, want pair, user, network and owner", len(recs))
	}
	if err := m.Lift(ctx, Pair, "alice", attacker); err != nil {
		t.Fatal(err)
	}
	if admits(m, "alice", attacker) != 0 {
		t.Error("a lifted block still refuses")
	}
	if m.Lift(ctx, 0, "", netip.Prefix{}) == nil {
		t.Error("Lift of kind 0 did not fail")
	}
}

func TestNetworkOf(t *testing.T) {
	for ip, want := range map[string]string{
		"203.0.113.50":          "203.0.113.0/24",
		"::ffff:203.0.113.50":   "203.0.113.0/24",
		"2001:db8:1:2::7":       "2001:db8:1::/48",
		"2001:db8:1:ffff::1234": "2001:db8:1::/48",
	} {
		if got := NetworkOf(netip.MustParseAddr(ip)).String(); got != want {
			t.Errorf("NetworkOf(%s) = %s, want %s", ip, got, want)
		}
	}
	if NetworkOf(netip.Addr{}).IsValid() {
		t.Error("no address has a network")
	}
}

func TestDigester(t *testing.T) {
	d := NewDigester(nil)
	if d.Sum("ab", "c") == d.Sum("a", "bc") {
		t.Error("field boundaries are not part of the digest")
	}
	if NewDigester(nil).Sum("a") == d.Sum("a") {
		t.Error("two random keys gave the same digest")
	}
	a, b := NewDigester([]byte("k")), NewDigester([]byte("k"))
	if a.Fingerprint("u", "p") != b.Fingerprint("u", "p") {
		t.Error("one key, two fingerprints")
	}
}
