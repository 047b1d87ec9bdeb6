package state

import (
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// controlsContract is what every Controls does, shared or not.
func controlsContract(t *testing.T, c Controls) {
	t.Helper()
	if _, ok := c.Drained("mailhost01"); ok {
		t.Fatal("drained before any drain")
	}
	if err := c.SetDrain(ctx, Drain{Backend: "mailhost01", To: "mailhost02", By: "oncall"}); err != nil {
		t.Fatal(err)
	}
	if d, ok := c.Drained("mailhost01"); !ok || d.To != "mailhost02" || d.By != "oncall" {
		t.Errorf("Drained = %+v, %v", d, ok)
	}
	if err := c.SetHold(ctx, Hold{User: "Carol", Wait: 7}); err != nil {
		t.Fatal(err)
	}
	if h, ok := c.Held("CAROL"); !ok || h.Wait != 7 || h.User != "carol" {
		t.Errorf("Held(CAROL) = %+v, %v; want carol, folded", h, ok)
	}
	if _, ok := c.Held("dave"); ok {
		t.Error("dave held")
	}
	if got := c.Drains(); len(got) != 1 || got[0].Backend != "mailhost01" {
		t.Errorf("Drains = %+v", got)
	}
	if got := c.Holds(); len(got) != 1 || got[0].User != "carol" {
		t.Errorf("Holds = %+v", got)
	}
	if existed, err := c.Undrain(ctx, "mailhost01"); err != nil || !existed {
		t.Errorf("Undrain = %v, %v", existed, err)
	}
	if existed, err := c.Undrain(ctx, "mailhost01"); err != nil || existed {
		t.Errorf("second Undrain = %v, %v; want not existed", existed, err)
	}
	if existed, err := c.Unhold(ctx, "carol"); err != nil || !existed {
		t.Errorf("Unhold = %v, %v", existed, err)
	}
	if _, ok := c.Held("carol"); ok {
		t.Error("carol still held")
	}
}

// subscribed waits until n stores listen for pushes on mr.
func subscribed(t *testing.T, mr *miniredis.Miniredis, n int) {
	t.Helper()
	eventually(t, "the stores subscribed", func() bool { return mr.PubSubNumSub(redisChannel)[redisChannel] >= n })
}

func TestLocalControls(t *testing.T) {
	controlsContract(t, &LocalControls{})
}

func TestRedisControls(t *testing.T) {
	controlsContract(t, newTestRedis(t, miniredis.RunT(t), sharedLimits, nil))
}

// A drain or hold made on one imapgate applies on another at once (the
// push), and one started later loads it.
func TestRedisControlsShared(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newTestRedis(t, mr, sharedLimits, nil), newTestRedis(t, mr, sharedLimits, nil)
	subscribed(t, mr, 2)
	if err := a.SetDrain(ctx, Drain{Backend: "mailhost01", By: "oncall", Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetHold(ctx, Hold{User: "carol", Wait: 5}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the drain and hold pushed to b", func() bool {
		_, drained := b.Drained("mailhost01")
		_, held := b.Held("carol")
		return drained && held
	})
	c := newTestRedis(t, mr, sharedLimits, nil)
	subscribed(t, mr, 3)
	if d, ok := c.Drained("mailhost01"); !ok || d.By != "oncall" {
		t.Errorf("a store started later: Drained = %+v, %v", d, ok)
	}
	if existed, err := b.Undrain(ctx, "mailhost01"); err != nil || !existed {
		t.Fatalf("Undrain on b = %v, %v", existed, err)
	}
	eventually(t, "the undrain pushed to a and c", func() bool {
		_, onA := a.Drained("mailhost01")
		_, onC := c.Drained("mailhost01")
		return !onA && !onC
	})
	if _, ok := a.Held("carol"); !ok {
		t.Error("the undrain lost carol's hold")
	}
}

// With the store down a change is made here only, and says so; the
// controls known stay; once the store is back, its view is loaded.
func TestRedisControlsFallBack(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newTestRedis(t, mr, sharedLimits, nil)
	if err := a.SetDrain(ctx, Drain{Backend: "mailhost01"}); err != nil {
		t.Fatal(err)
	}
	mr.Close()
	err := a.SetHold(ctx, Hold{User: "carol", Wait: 5})
	if !errors.Is(err, ErrLocalOnly) {
		t.Errorf("SetHold with the store down: %v, want ErrLocalOnly", err)
	}
	if _, ok := a.Held("carol"); !ok {
		t.Error("the hold was not made here")
	}
	if _, ok := a.Drained("mailhost01"); !ok {
		t.Error("the drain known before the store went was lost")
	}
	if err := a.Lift(ctx, Pair, "amy", attacker); !errors.Is(err, ErrLocalOnly) {
		t.Errorf("Lift with the store down: %v, want ErrLocalOnly", err)
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sharing resumed", a.Shared)
	if _, ok := a.Drained("mailhost01"); !ok {
		t.Error("the store's drain is not in the view reloaded")
	}
	if err := a.SetHold(ctx, Hold{User: "carol", Wait: 5}); err != nil {
		t.Errorf("SetHold once shared again: %v", err)
	}
}

// A flush is pushed to every store's OnFlush, the sender's included;
// with the store down it says it could not be.
func TestRedisFlushPushed(t *testing.T) {
	mr := miniredis.RunT(t)
	a, b := newTestRedis(t, mr, sharedLimits, nil), newTestRedis(t, mr, sharedLimits, nil)
	got := make(chan string, 2)
	a.OnFlush(func(user string) { got <- "a " + user })
	b.OnFlush(func(user string) { got <- "b " + user })
	subscribed(t, mr, 2)
	if err := a.Flush(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("flushes pushed: %v, want a and b", seen)
		}
	}
	if !seen["a carol"] || !seen["b carol"] {
		t.Errorf("flushes pushed: %v", seen)
	}
	mr.Close()
	if err := b.Flush(ctx, "carol"); !errors.Is(err, ErrLocalOnly) {
		t.Errorf("Flush with the store down: %v, want ErrLocalOnly", err)
	}
}
