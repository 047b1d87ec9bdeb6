package backend

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestResolveLiterals(t *testing.T) {
	var r Resolver
	r.lookup = func(context.Context, string, string) ([]netip.Addr, error) {
		t.Error("an IP literal was looked up")
		return nil, errors.New("no lookups")
	}
	for host, want := range map[string]string{
		"192.168.1.22":      "192.168.1.22",
		"::1":               "::1",
		"[2001:db8::1]":     "2001:db8::1",
		"::ffff:10.0.0.1":   "10.0.0.1",
		"[::ffff:10.0.0.1]": "10.0.0.1",
	} {
		got, err := r.Resolve(context.Background(), host)
		if err != nil || got.String() != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", host, got, err, want)
		}
	}
	for _, host := range []string{"", "fe80::1%eth0"} {
		if got, err := r.Resolve(context.Background(), host); err == nil {
			t.Errorf("Resolve(%q) = %v, want error", host, got)
		}
	}
}

func TestResolveLocalhost(t *testing.T) {
	var r Resolver
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := r.Resolve(ctx, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	// IPv4 is preferred when the name has both.
	if got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Resolve(localhost) = %v, want 127.0.0.1", got)
	}
}

func TestResolveFailure(t *testing.T) {
	var r Resolver
	// Bound the test when no DNS server answers on this machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	got, err := r.Resolve(ctx, "nonexistent.invalid")
	if err == nil {
		t.Fatalf("Resolve(nonexistent.invalid) = %v, want error", got)
	}
	if !strings.Contains(err.Error(), `"nonexistent.invalid"`) {
		t.Errorf("error %q does not name the host", err)
	}
}

func TestResolveDeadline(t *testing.T) {
	r := Resolver{}
	r.lookup = func(ctx context.Context, _, _ string) ([]netip.Addr, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := r.Resolve(ctx, "slow.example"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

// fakeDNS is a lookup function with a scripted answer and a call count.
type fakeDNS struct {
	mu    sync.Mutex
	calls int
	addrs []netip.Addr
	err   error
}

func (f *fakeDNS) lookup(_ context.Context, network, _ string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if network != "ip" {
		return nil, errors.New("unexpected network " + network)
	}
	return f.addrs, f.err
}

func (f *fakeDNS) set(err error, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.addrs = err, nil
	for _, a := range addrs {
		f.addrs = append(f.addrs, netip.MustParseAddr(a))
	}
}

func TestResolvePick(t *testing.T) {
	for _, tt := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"2001:db8::1", "10.0.0.2", "10.0.0.1"}, "10.0.0.2"},
		{[]string{"2001:db8::1", "2001:db8::2"}, "2001:db8::1"},
		{[]string{"::ffff:10.0.0.9"}, "10.0.0.9"},
		{[]string{"fe80::1%eth0", "2001:db8::3"}, "2001:db8::3"},
	} {
		dns := &fakeDNS{}
		dns.set(nil, tt.addrs...)
		r := Resolver{TTL: -1, lookup: dns.lookup}
		got, err := r.Resolve(context.Background(), "mail.example")
		if err != nil || got.String() != tt.want {
			t.Errorf("answer %v: Resolve = %v, %v; want %s", tt.addrs, got, err, tt.want)
		}
	}
	dns := &fakeDNS{}
	dns.set(nil)
	r := Resolver{lookup: dns.lookup}
	if _, err := r.Resolve(context.Background(), "empty.example"); err == nil || !strings.Contains(err.Error(), "no addresses") {
		t.Errorf("empty answer: err = %v, want no addresses", err)
	}
}

func TestResolveCache(t *testing.T) {
	dns := &fakeDNS{}
	now := time.Unix(1_700_000_000, 0)
	var clockMu sync.Mutex
	r := Resolver{TTL: 30 * time.Second, lookup: dns.lookup, now: func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return now
	}}
	advance := func(d time.Duration) {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(d)
	}
	resolve := func() (string, error) {
		a, err := r.Resolve(context.Background(), "mail.example")
		return a.String(), err
	}

	// Failures are not cached.
	dns.set(errors.New("SERVFAIL"))
	if _, err := resolve(); err == nil || !strings.Contains(err.Error(), `"mail.example"`) || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("err = %v, want SERVFAIL wrapped with the host", err)
	}
	dns.set(nil, "10.0.0.1")
	if got, err := resolve(); got != "10.0.0.1" || err != nil {
		t.Fatalf("after a failure: %s, %v; want 10.0.0.1", got, err)
	}
	if dns.calls != 2 {
		t.Errorf("calls = %d, want 2: a failure must not be cached", dns.calls)
	}

	// Answers are reused within the TTL, then looked up again.
	dns.set(nil, "10.0.0.2")
	advance(29 * time.Second)
	if got, _ := resolve(); got != "10.0.0.1" {
		t.Errorf("within TTL: %s, want cached 10.0.0.1", got)
	}
	advance(time.Second)
	if got, _ := resolve(); got != "10.0.0.2" {
		t.Errorf("after TTL: %s, want fresh 10.0.0.2", got)
	}
	if dns.calls != 3 {
		t.Errorf("calls = %d, want 3", dns.calls)
	}

	// A negative TTL turns the cache off.
	off := Resolver{TTL: -1, lookup: dns.lookup}
	for range 2 {
		if _, err := off.Resolve(context.Background(), "mail.example"); err != nil {
			t.Fatal(err)
		}
	}
	if dns.calls != 5 {
		t.Errorf("calls = %d, want 5 with the cache off", dns.calls)
	}
}

// TestResolveConcurrent exercises the cache under the race detector.
func TestResolveConcurrent(t *testing.T) {
	dns := &fakeDNS{}
	dns.set(nil, "10.0.0.1")
	r := Resolver{lookup: dns.lookup}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if a, err := r.Resolve(context.Background(), "mail.example"); err != nil || a.String() != "10.0.0.1" {
					t.Errorf("Resolve = %v, %v", a, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
