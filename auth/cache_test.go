package auth

import (
	"github.com/imapgate/imapgate/auth/state"
	"strings"

	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

func TestLoginCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newLoginCache(time.Minute, 3)
	c.now = func() time.Time { return now }
	fp := state.NewDigester(nil)
	k := cacheKey{"mailhost01", "imap", "alice"}
	right, wrong := fp.Sum("alice", "right"), fp.Sum("alice", "wrong")

	if c.hit(k, right) {
		t.Fatal("hit in an empty cache")
	}
	c.store(k, right)
	if !c.hit(k, right) {
		t.Error("no hit for the stored password")
	}
	if c.hit(k, wrong) {
		t.Error("a different password hit")
	}
	if c.hit(cacheKey{"mailhost02", "imap", "alice"}, right) {
		t.Error("hit on another backend")
	}
	now = now.Add(time.Minute)
	if c.hit(k, right) {
		t.Error("hit after the TTL")
	}
	c.store(k, right)
	c.forget(k)
	if c.hit(k, right) {
		t.Error("hit after forget")
	}
	for _, u := range []string{"a", "b", "c", "d", "e"} {
		c.store(cacheKey{"m", "imap", u}, right)
	}
	if n := c.len(); n > 3 {
		t.Errorf("cache holds %d entries, bound is 3", n)
	}
	if newLoginCache(0, 10) != nil {
		t.Error("TTL 0 built a cache")
	}
	var off *loginCache
	off.store(k, right)
	if off.hit(k, right) {
		t.Error("the nil cache hit")
	}
}

func TestFingerprintFieldsAreSeparated(t *testing.T) {
	fp := state.NewDigester(nil)
	if fp.Sum("ab", "c") == fp.Sum("a", "bc") {
		t.Error("field boundaries are not part of the digest")
	}
	if first, again := fp.Sum("a"), fp.Sum("a"); first != again {
		t.Error("digest is not stable")
	}
	if state.NewDigester(nil).Sum("a") == fp.Sum("a") {
		t.Error("two processes share a key")
	}
}

func TestHandlerCacheSavesBackendLogins(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.CacheTTL = time.Minute

	for range 30 {
		if w := serve(t, h, nginxHeader()); w.Header().Get("Auth-Status") != "OK" {
			t.Fatalf("answer %v", w.Header())
		}
	}
	if len(v.calls) != 1 {
		t.Errorf("30 identical logins made %d backend checks, want 1", len(v.calls))
	}
	// Another password is checked, and a refusal drops the cached one:
	// it may mean the password was changed.
	v.outcome = imapcheck.Rejected
	if w := serve(t, h, nginxHeader("Auth-Pass", "other")); w.Header().Get("Auth-Status") != imapInvalid {
		t.Fatalf("answer %v", w.Header())
	}
	v.outcome = imapcheck.OK
	serve(t, h, nginxHeader())
	if len(v.calls) != 3 {
		t.Errorf("after a refusal the old password was not checked again: %d checks", len(v.calls))
	}
	// SMTP and IMAP logins are both checked over IMAP: one entry serves both.
	serve(t, h, nginxHeader("Auth-Protocol", "smtp"))
	if len(v.calls) != 3 {
		t.Errorf("SMTP login after IMAP login made a check: %d checks", len(v.calls))
	}
	if !bytes.Contains(log.Bytes(), []byte("cached=true")) {
		t.Errorf("log does not say the answer was cached:\n%s", log.String())
	}
}

func TestHandlerCacheOff(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	for range 3 {
		serve(t, h, nginxHeader())
	}
	if len(v.calls) != 3 {
		t.Errorf("with the cache off, 3 logins made %d checks", len(v.calls))
	}
}

// gateVerifier holds every check until release is closed.
type gateVerifier struct {
	release chan struct{}
	outcome imapcheck.Outcome
	// entered, when not nil, is told of every check that starts.
	entered chan struct{}

	mu    sync.Mutex
	calls int
}

func (g *gateVerifier) Verify(ctx context.Context, req imapcheck.Request) (imapcheck.Outcome, error) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	if g.entered != nil {
		g.entered <- struct{}{}
	}
	<-g.release
	return g.outcome, nil
}

func (g *gateVerifier) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

func TestHandlerCoalescesConcurrentChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		v := &gateVerifier{release: release, outcome: imapcheck.OK}
		var log bytes.Buffer
		h := newTestHandler(t, &fakeVerifier{}, &log)
		h.Verifier = v

		var wg sync.WaitGroup
		answers := make([]http.Header, 10)
		for i := range answers {
			wg.Go(func() { answers[i] = serve(t, h, nginxHeader()).Header() })
		}
		// Every request is now either in the one check or waiting for it.
		synctest.Wait()
		close(release)
		wg.Wait()
		for i, a := range answers {
			if a.Get("Auth-Status") != "OK" {
				t.Errorf("request %d: %v", i, a)
			}
		}
		if n := v.count(); n != 1 {
			t.Errorf("10 concurrent identical logins made %d checks, want 1", n)
		}
		// Different passwords are never shared.
		go serve(t, h, nginxHeader("Auth-Pass", "one"))
		go serve(t, h, nginxHeader("Auth-Pass", "two"))
		synctest.Wait()
		if n := v.count(); n != 3 {
			t.Errorf("two different passwords made %d checks, want 2 more", n-1)
		}
	})
}

// TestHandlerBoundsChecksPerBackend: with MaxChecks 2, a third distinct
// check waits until one of the two in flight ends.
func TestHandlerBoundsChecksPerBackend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		v := &gateVerifier{release: release, outcome: imapcheck.OK}
		var log bytes.Buffer
		h := newTestHandler(t, &fakeVerifier{}, &log)
		h.Verifier = v
		h.MaxChecks = 2
		for _, pass := range []string{"one", "two", "three"} {
			go serve(t, h, nginxHeader("Auth-Pass", pass))
		}
		synctest.Wait()
		if n := v.count(); n != 2 {
			t.Errorf("%d checks in flight, want 2", n)
		}
		close(release)
		synctest.Wait()
		if n := v.count(); n != 3 {
			t.Errorf("%d checks after the slots freed, want 3", n)
		}
	})
}

// TestHandlerSlotWaitEnds: a check that cannot get a slot before its
// deadline is a temporary failure.
func TestHandlerSlotWaitEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		v := &gateVerifier{release: release, outcome: imapcheck.OK}
		var log bytes.Buffer
		h := newTestHandler(t, &fakeVerifier{}, &log)
		h.Verifier = v
		h.MaxChecks = 1
		h.Timeout = time.Second
		go serve(t, h, nginxHeader("Auth-Pass", "one"))
		synctest.Wait()
		w := serve(t, h, nginxHeader("Auth-Pass", "two")) // waits a fake second
		if got := w.Header().Get("Auth-Status"); got != imapTemporary {
			t.Errorf("no slot until the deadline: Auth-Status %q", got)
		}
		close(release)
	})
}

func TestCacheKeyHashSeparatesFields(t *testing.T) {
	c := newLoginCache(time.Minute, 10)
	if c.hash(cacheKey{"ab", "c", "u"}) == c.hash(cacheKey{"a", "bc", "u"}) {
		t.Error("field boundaries are not part of the entry's key")
	}
	k1, k2 := cacheKey{"m", "imap", "alice"}, cacheKey{"m", "imap", strings.ToLower("ALICE")}
	if c.hash(k1) != c.hash(k2) {
		t.Error("the key's hash is not stable")
	}
	if newLoginCache(time.Minute, 10).hash(cacheKey{"m", "imap", "alice"}) == c.hash(cacheKey{"m", "imap", "alice"}) {
		t.Error("two caches share seeds")
	}
}

// The operator finds and flushes a user's entries whatever the case the
// user logged in with, on the backends named, and nothing of another
// user's.
func TestCacheLookupAndForgetUser(t *testing.T) {
	c := newLoginCache(time.Minute, 10)
	var sum [32]byte
	c.store(newCacheKey("m1", "imap", "Alice"), sum)
	c.store(newCacheKey("m2", "pop3", "alice"), sum)
	c.store(newCacheKey("m1", "imap", "bob"), sum)
	got := c.lookupUser("ALICE", []string{"m1", "m2", "m3"})
	if len(got) != 2 || got[0].Backend != "m1" || got[0].Protocol != "imap" || got[1].Backend != "m2" || got[1].Protocol != "pop3" {
		t.Fatalf("lookupUser = %+v, want alice's entries on m1 (imap) and m2 (pop3)", got)
	}
	if n := c.forgetUser("alice", []string{"m1", "m2"}); n != 2 {
		t.Errorf("forgetUser dropped %d live entries, want 2", n)
	}
	if c.hit(newCacheKey("m1", "imap", "Alice"), sum) || !c.hit(newCacheKey("m1", "imap", "bob"), sum) {
		t.Error("after the flush alice still hits, or bob no longer does")
	}
}
