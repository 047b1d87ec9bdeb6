package state

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// changes records a store's OnChange calls.
type changes struct {
	mu  sync.Mutex
	got []bool
}

func (c *changes) record(shared bool, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, shared)
}

func (c *changes) list() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.got...)
}

func newTestRedis(t *testing.T, mr *miniredis.Miniredis, l Limits, c *changes) *Redis {
	t.Helper()
	cfg := RedisConfig{URL: "redis://" + mr.Addr(), Limits: l, Timeout: time.Second}
	if c != nil {
		cfg.OnChange = c.record
	}
	r, err := NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// eventually polls cond for a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 5 s", what)
}

var sharedLimits = Limits{PerPair: 10, PerUser: 30, PerNetwork: 100, Window: time.Minute, Remember: time.Hour, MaxTracked: 1000}

// Guesses spread over two imapgates count once: the tenth distinct wrong
// password, whichever took it, blocks the pair on both, and the block is
// pushed so that the other knows it without asking.
func TestRedisSharesCounts(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newTestRedis(t, mr, sharedLimits, nil), newTestRedis(t, mr, sharedLimits, nil)
	if a.Fingerprint("amy", "guess") != b.Fingerprint("amy", "guess") {
		t.Fatal("two imapgates on one store disagree on fingerprints")
	}
	for i := range 10 {
		s := []*Redis{a, b}[i%2]
		fp := s.Fingerprint("amy", string(rune('a'+i)))
		if k := s.Begin(ctx, Attempt{"amy", attacker, fp}, time.Now().Add(time.Minute)); k != 0 {
			t.Fatalf("guess %d refused by %v", i, k)
		}
		s.Failure(ctx, Attempt{"amy", attacker, fp})
		s.End(ctx, Attempt{"amy", attacker, fp})
	}
	if k := a.Begin(ctx, Attempt{"amy", attacker, 99}, time.Time{}); k != Pair {
		t.Errorf("11th guess on a: %v, want pair", k)
	}
	eventually(t, "the block pushed to b", func() bool { return b.Blocked(ctx, "amy", attacker) == Pair })
	if k := b.Blocked(ctx, "amy", owner); k != 0 {
		t.Errorf("another network for amy: %v", k)
	}
	recs, err := b.Records(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pair *Record
	for i := range recs {
		if recs[i].Kind == Pair {
			pair = &recs[i]
		}
	}
	if pair == nil || pair.Failures != 10 || !pair.Blocked || pair.User != "amy" || pair.Network != attacker {
		t.Fatalf("records %+v", recs)
	}
	if err := b.Lift(ctx, Pair, "amy", attacker); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lift pushed to a", func() bool {
		return a.Blocked(ctx, "amy", attacker) == 0 && a.Begin(ctx, Attempt{"amy", attacker, 98}, time.Time{}) == 0
	})
}

// Checks in flight on one imapgate count on the other.
func TestRedisSharesChecksInFlight(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newTestRedis(t, mr, sharedLimits, nil), newTestRedis(t, mr, sharedLimits, nil)
	for i := range 10 {
		if k := a.Begin(ctx, Attempt{"amy", attacker, uint64(i)}, time.Now().Add(time.Minute)); k != 0 {
			t.Fatalf("guess %d refused: %v", i, k)
		}
	}
	if k := b.Begin(ctx, Attempt{"amy", attacker, 100}, time.Now().Add(time.Minute)); k != Pair {
		t.Errorf("11th concurrent guess on the other imapgate: %v, want pair", k)
	}
	if k := b.Begin(ctx, Attempt{"amy", attacker, 3}, time.Now().Add(time.Minute)); k != 0 {
		t.Errorf("a password already in flight: %v, want admitted", k)
	}
}

// A success marks the owner everywhere: a user locked by a distributed
// attack still gets in from its own network, through either imapgate.
func TestRedisOwnerMarks(t *testing.T) {
	mr := miniredis.RunT(t)
	l := sharedLimits
	l.PerUser = 3
	a, b := newTestRedis(t, mr, l, nil), newTestRedis(t, mr, l, nil)
	a.Success(ctx, "amy", owner)
	eventually(t, "the owner mark on the server", func() bool { return mr.Exists(redisKeyOf(countKey{Owner, recordKey{"amy", owner}})) })
	for i := range 3 {
		net := NetworkOf(netipAddr(10, byte(i), 0, 1))
		b.Failure(ctx, Attempt{"amy", net, uint64(i)})
	}
	eventually(t, "the user's block pushed", func() bool { return a.Blocked(ctx, "amy", stranger) == User })
	if k := b.Blocked(ctx, "amy", owner); k != 0 {
		t.Errorf("amy's own network through the other imapgate: %v, want none", k)
	}
}

// With the store gone, decisions are local at once (the limits hold, and
// nothing waits on the store); the change is told once; when the store
// returns, sharing resumes.
func TestRedisFallsBack(t *testing.T) {
	mr := miniredis.RunT(t)
	var c changes
	a := newTestRedis(t, mr, sharedLimits, &c)
	if !a.Shared() {
		t.Fatal("not shared at start")
	}
	mr.Close()
	start := time.Now()
	for i := range 15 {
		at := Attempt{"amy", attacker, uint64(i)}
		if a.Begin(ctx, at, time.Now().Add(time.Minute)) == 0 {
			a.Failure(ctx, at)
			a.End(ctx, at)
		}
	}
	if k := a.Begin(ctx, Attempt{"amy", attacker, 99}, time.Time{}); k != Pair {
		t.Errorf("with the store down, the 16th guess: %v, want pair (local limits)", k)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("15 guesses took %v with the store down", took)
	}
	if a.Shared() {
		t.Error("still shared with the store down")
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sharing resumed", a.Shared)
	if got := c.list(); len(got) != 3 || !got[0] || got[1] || !got[2] {
		t.Errorf("OnChange calls %v, want [true false true]", got)
	}
	if err := a.Lift(ctx, Pair, "amy", attacker); err != nil {
		t.Errorf("Lift once shared again: %v", err)
	}
}

// An unreachable store at start: the store starts on its own Memory.
func TestRedisUnreachableAtStart(t *testing.T) {
	var c changes
	r, err := NewRedis(RedisConfig{URL: "redis://127.0.0.1:1", Limits: sharedLimits, Timeout: 100 * time.Millisecond, OnChange: c.record})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Shared() || len(c.list()) != 1 || c.list()[0] {
		t.Errorf("shared %v, OnChange %v; want local, [false]", r.Shared(), c.list())
	}
	if r.Fingerprint("a", "b") == 0 {
		t.Error("no fingerprint without a store")
	}
}

func TestParseRedisURLHidesPassword(t *testing.T) {
	for _, u := range []string{"redis://user:s3cretpw@host:notaport/0", "redis://:s3cretpw@host/x", "http://:s3cretpw@host/"} {
		_, err := ParseRedisURL(u)
		if err == nil {
			t.Errorf("%q accepted", u)
			continue
		}
		if contains(err.Error(), "s3cretpw") {
			t.Errorf("error %q holds the password", err)
		}
	}
	if _, err := ParseRedisURL("rediss://:pw@127.0.0.1:6380/2"); err != nil {
		t.Error(err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func netipAddr(a, b, c, d byte) netip.Addr { return netip.AddrFrom4([4]byte{a, b, c, d}) }

// When the store goes, an imapgate's own limits start from the shared
// counts it last heard, not from what it saw alone.
func TestRedisFallbackKeepsSharedCounts(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newTestRedis(t, mr, sharedLimits, nil), newTestRedis(t, mr, sharedLimits, nil)
	for i := range 8 {
		s := []*Redis{a, b}[i%2]
		s.Failure(ctx, Attempt{"amy", attacker, uint64(i)})
	}
	mr.Close()
	admitted := 0
	for i := range 10 {
		at := Attempt{"amy", attacker, uint64(100 + i)}
		if a.Begin(ctx, at, time.Now().Add(time.Minute)) == 0 {
			admitted++
			a.Failure(ctx, at)
			a.End(ctx, at)
		}
	}
	// a last heard the count at 7 (its 4th failure, the 7th in all).
	if admitted != 3 {
		t.Errorf("with the store down, a admitted %d more guesses, want 3 (10 - the 7 it heard of)", admitted)
	}
}
