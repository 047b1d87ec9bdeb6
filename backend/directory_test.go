package backend

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSource is an in-memory directory whose failures and speed a test
// controls.
type fakeSource struct {
	mu    sync.Mutex
	users map[string]*Backend
	err   error
	calls map[string]int
	// gate, when set, holds every lookup until it is closed.
	gate  chan struct{}
	pings atomic.Int32
}

func newFakeSource(users map[string]*Backend) *fakeSource {
	return &fakeSource{users: users, calls: map[string]int{}}
}

func (f *fakeSource) Select(ctx context.Context, user string) (*Backend, error) {
	f.mu.Lock()
	f.calls[user]++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.users[user], nil
}

func (f *fakeSource) Ping(context.Context) error {
	f.pings.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakeSource) Close() error { return nil }

func (f *fakeSource) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeSource) callsFor(user string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[user]
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	mh1 = &Backend{Name: "mailhost01"}
	mh2 = &Backend{Name: "mailhost02"}
)

func newTestDirectory(src Source) (*Directory, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	d := &Directory{Name: RuleSQL, Source: src, TTL: time.Minute, NegativeTTL: 10 * time.Second, Stale: 5 * time.Minute, now: clk.now}
	return d, clk
}

func mustSelect(t *testing.T, d *Directory, ctx context.Context, user string, want *Backend) {
	t.Helper()
	got, err := d.Select(ctx, user)
	if err != nil || got != want {
		t.Fatalf("Select(%q) = %v, %v; want %v, nil", user, got, err, want)
	}
}

func TestDirectoryCachesForTTL(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	d, clk := newTestDirectory(src)
	ctx := context.Background()
	mustSelect(t, d, ctx, "alice", mh1)
	clk.advance(59 * time.Second)
	mustSelect(t, d, ctx, "alice", mh1)
	if n := src.callsFor("alice"); n != 1 {
		t.Fatalf("within the TTL: %d lookups, want 1", n)
	}
	src.users["alice"] = mh2 // moved
	clk.advance(2 * time.Second)
	mustSelect(t, d, ctx, "alice", mh2)
	if n := src.callsFor("alice"); n != 2 {
		t.Fatalf("after the TTL: %d lookups, want 2", n)
	}
}

func TestDirectoryNegativeAnswersCachedShorter(t *testing.T) {
	src := newFakeSource(map[string]*Backend{})
	d, clk := newTestDirectory(src)
	ctx := context.Background()
	mustSelect(t, d, ctx, "newbie", nil)
	clk.advance(9 * time.Second)
	mustSelect(t, d, ctx, "newbie", nil)
	if n := src.callsFor("newbie"); n != 1 {
		t.Fatalf("within the negative TTL: %d lookups, want 1", n)
	}
	src.mu.Lock()
	src.users["newbie"] = mh1 // created
	src.mu.Unlock()
	clk.advance(2 * time.Second)
	mustSelect(t, d, ctx, "newbie", mh1)
}

func TestDirectoryServesStaleWhenSourceFails(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	d, clk := newTestDirectory(src)
	mustSelect(t, d, context.Background(), "alice", mh1)
	mustSelect(t, d, context.Background(), "bob", nil)
	down := errors.New("dial tcp 127.0.20.1:3306: connect: connection refused")
	src.setErr(down)
	clk.advance(2 * time.Minute)

	var tr Trace
	ctx := WithTrace(context.Background(), &tr)
	mustSelect(t, d, ctx, "alice", mh1)
	if len(tr.Stale) != 1 || tr.Stale[0].Directory != RuleSQL || tr.Stale[0].Age != 2*time.Minute || !errors.Is(tr.Stale[0].Cause, down) {
		t.Fatalf("trace = %+v, want one stale answer of sql, 2m old, caused by the outage", tr.Stale)
	}
	// A no-such-user answer is not served stale: temporary instead.
	if b, err := d.Select(ctx, "bob"); err == nil || b != nil {
		t.Fatalf("stale negative: Select(bob) = %v, %v; want an error", b, err)
	}
	// Past TTL + Stale, the known user gets the error too.
	clk.advance(4 * time.Minute)
	b, err := d.Select(ctx, "alice")
	if !errors.Is(err, down) || b != nil || !strings.Contains(err.Error(), "directory sql") {
		t.Fatalf("beyond the stale window: Select = %v, %v; want the outage, naming the directory", b, err)
	}
	if st := d.State(); st.Up || !errors.Is(st.Err, down) {
		t.Fatalf("state %+v, want down with the outage", st)
	}
	// Recovery needs nothing but an answer.
	src.setErr(nil)
	mustSelect(t, d, ctx, "alice", mh1)
	if st := d.State(); !st.Up || st.Err != nil {
		t.Fatalf("state after recovery %+v, want up", st)
	}
}

func TestDirectoryStaleOff(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	d, clk := newTestDirectory(src)
	d.Stale = -1
	mustSelect(t, d, context.Background(), "alice", mh1)
	src.setErr(errors.New("down"))
	clk.advance(61 * time.Second)
	if _, err := d.Select(context.Background(), "alice"); err == nil {
		t.Fatal("Stale < 0: an expired answer was served")
	}
}

func TestDirectoryCachingOffStillServesStale(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	d, clk := newTestDirectory(src)
	d.TTL, d.NegativeTTL = -1, -1
	mustSelect(t, d, context.Background(), "alice", mh1)
	mustSelect(t, d, context.Background(), "alice", mh1)
	if n := src.callsFor("alice"); n != 2 {
		t.Fatalf("TTL < 0: %d lookups, want 2", n)
	}
	src.setErr(errors.New("down"))
	clk.advance(time.Minute)
	mustSelect(t, d, context.Background(), "alice", mh1)
}

func TestDirectoryAnswerErrorIsNotAnOutage(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	d, clk := newTestDirectory(src)
	mustSelect(t, d, context.Background(), "alice", mh1)
	bad := &AnswerError{Msg: `answer "no such host!" is neither a backend nor a host`}
	src.setErr(bad)
	clk.advance(2 * time.Minute)
	var target *AnswerError
	if _, err := d.Select(context.Background(), "alice"); !errors.As(err, &target) {
		t.Fatalf("Select = %v, want the AnswerError (a bad answer is not served around)", err)
	}
	if st := d.State(); !st.Up {
		t.Fatalf("state %+v: a bad answer is an answer; want up", st)
	}
}

func TestDirectoryCoalescesLookups(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	src.gate = make(chan struct{})
	d, _ := newTestDirectory(src)
	const n = 20
	var wg, started sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			b, err := d.Select(context.Background(), "alice")
			if err == nil && b != mh1 {
				err = errors.New("wrong backend")
			}
			errs <- err
		}()
	}
	// Every caller is running and one lookup is in the source: let it
	// answer. A caller that joins the flight late finds the answer cached,
	// so either way the source is asked once; without coalescing every
	// caller that got here before the gate opened would have asked.
	started.Wait()
	for src.callsFor("alice") == 0 {
		time.Sleep(time.Millisecond)
	}
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if c := src.callsFor("alice"); c != 1 {
		t.Errorf("%d concurrent lookups asked the source %d times, want 1", n, c)
	}
}

func TestDirectoryCallerGivingUpDoesNotCancelOthers(t *testing.T) {
	src := newFakeSource(map[string]*Backend{"alice": mh1})
	src.gate = make(chan struct{})
	d, _ := newTestDirectory(src)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := d.Select(ctx, "alice")
		first <- err
	}()
	for src.callsFor("alice") == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan *Backend, 1)
	go func() {
		b, _ := d.Select(context.Background(), "alice")
		second <- b
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	close(src.gate)
	if b := <-second; b != mh1 {
		t.Fatalf("second caller got %v, want mailhost01", b)
	}
}

func TestDirectorySizeBound(t *testing.T) {
	users := map[string]*Backend{"a": mh1, "b": mh1, "c": mh1}
	src := newFakeSource(users)
	d, _ := newTestDirectory(src)
	d.Size = 2
	for _, u := range []string{"a", "b", "c", "a"} {
		mustSelect(t, d, context.Background(), u, mh1)
	}
	if n := src.callsFor("a"); n != 2 {
		t.Errorf("a evicted by b and c from a cache of 2: %d lookups, want 2", n)
	}
	if d.cache.Len() > 2 {
		t.Errorf("cache holds %d, want at most 2", d.cache.Len())
	}
}

func TestDirectoryImplausibleUsers(t *testing.T) {
	src := newFakeSource(map[string]*Backend{})
	src.setErr(errors.New("would be a temporary failure"))
	d, _ := newTestDirectory(src)
	for _, u := range []string{"", "a\x00b", "a\nb", "\xff\xfe", strings.Repeat("x", 321), "del\x7f"} {
		if b, err := d.Select(context.Background(), u); b != nil || err != nil {
			t.Errorf("Select(%q) = %v, %v; want no such user without asking", u, b, err)
		}
	}
	for u, n := range src.calls {
		t.Errorf("source asked for %q %d times", u, n)
	}
	if !plausibleUser("josé@example.org") || !plausibleUser("' or 1=1 --") || !plausibleUser("*)(uid=*") {
		t.Error("ordinary (and hostile but printable) names must reach the source, which treats them as data")
	}
}

func TestDirectoryStateAndProbe(t *testing.T) {
	src := newFakeSource(map[string]*Backend{})
	d, clk := newTestDirectory(src)
	var changes []string
	d.OnChange = func(name string, up bool, err error) {
		changes = append(changes, name+":"+map[bool]string{true: "up", false: "down"}[up])
	}
	if st := d.State(); st.Known || !st.Up || st.Name != RuleSQL {
		t.Fatalf("initial state %+v, want unknown, counted up", st)
	}
	if err := d.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	src.setErr(errors.New("connection refused"))
	clk.advance(time.Second)
	if err := d.Probe(context.Background()); err == nil {
		t.Fatal("probe of a failing source: no error")
	}
	st := d.State()
	if !st.Known || st.Up || st.Since != clk.now() {
		t.Fatalf("state %+v, want down since now", st)
	}
	d.Probe(context.Background()) // still down: no change reported
	src.setErr(nil)
	d.Probe(context.Background())
	if got := strings.Join(changes, ","); got != "sql:up,sql:down,sql:up" {
		t.Errorf("changes %s, want sql:up,sql:down,sql:up", got)
	}
}

func TestDirectoryRunProbes(t *testing.T) {
	src := newFakeSource(map[string]*Backend{})
	d := &Directory{Name: RuleLDAP, Source: src}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx, 5*time.Millisecond); close(done) }()
	for src.pings.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if !d.State().Known {
		t.Error("Run probed, but the state is unknown")
	}
}
