package auth

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"
)

// loginCache remembers, for a short time, which credentials a backend
// accepted, so that a mail client reconnecting (or opening five
// connections at once) costs the backend one check, not one per
// connection. It holds one entry per (backend, protocol, user): a keyed
// digest of the last verified password. A different password never
// matches, and a refused one drops the entry.
type loginCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

// cacheKey names whose login an entry is for.
type cacheKey struct {
	backend, protocol, user string
}

type cacheEntry struct {
	sum     [sha256.Size]byte
	expires time.Time
}

// newLoginCache returns a cache of at most max entries, each kept for ttl.
// A ttl of zero or less returns nil, which is a cache that never hits.
func newLoginCache(ttl time.Duration, max int) *loginCache {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &loginCache{ttl: ttl, max: max, now: time.Now, entries: make(map[cacheKey]cacheEntry)}
}

// hit reports whether sum is the digest last verified for k, within ttl.
func (c *loginCache) hit(k cacheKey, sum [sha256.Size]byte) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, k)
		return false
	}
	return hmac.Equal(e.sum[:], sum[:])
}

// store remembers sum as verified for k.
func (c *loginCache) store(k cacheKey, sum [sha256.Size]byte) {
	if c == nil {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		c.makeRoom(now)
	}
	c.entries[k] = cacheEntry{sum: sum, expires: now.Add(c.ttl)}
}

// forget drops k's entry: the backend has just refused a password for k,
// which may mean the password was changed.
func (c *loginCache) forget(k cacheKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, k)
}

// makeRoom drops expired entries, and if the cache is still full, about a
// tenth of the rest; a dropped entry costs one more check, nothing else.
func (c *loginCache) makeRoom(now time.Time) {
	makeRoom(c.entries, c.max, func(e cacheEntry) bool { return !now.Before(e.expires) })
}

// makeRoom keeps m under max entries: it drops the expired ones, then, if
// m is still full, about a tenth of the rest. Map iteration order is
// random, so that tenth is too.
func makeRoom[K comparable, V any](m map[K]V, max int, expired func(V) bool) {
	for k, v := range m {
		if expired(v) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < max-max/10 {
			break
		}
		delete(m, k)
	}
}

// len returns the number of entries, expired ones included.
func (c *loginCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// CachedLogin is a verified login the cache remembers, as the operator
// may see it: whose, where and until when; never anything derived from
// the password.
type CachedLogin struct {
	Backend  string    `json:"backend"`
	Protocol string    `json:"protocol"`
	Expires  time.Time `json:"expires"`
}

// lookupUser lists the live entries for user, whatever the backend and
// protocol (user names match case-insensitively, as the selectors do).
func (c *loginCache) lookupUser(user string) []CachedLogin {
	if c == nil {
		return nil
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []CachedLogin
	for k, e := range c.entries {
		if strings.EqualFold(k.user, user) && now.Before(e.expires) {
			out = append(out, CachedLogin{Backend: k.backend, Protocol: k.protocol, Expires: e.expires})
		}
	}
	slices.SortFunc(out, func(a, b CachedLogin) int {
		return cmp.Or(strings.Compare(a.Backend, b.Backend), strings.Compare(a.Protocol, b.Protocol))
	})
	return out
}

// forgetUser drops every entry for user (after a password change, so that
// the next login is checked) and returns how many live ones it dropped.
func (c *loginCache) forgetUser(user string) int {
	if c == nil {
		return 0
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.entries {
		if strings.EqualFold(k.user, user) {
			if now.Before(e.expires) {
				n++
			}
			delete(c.entries, k)
		}
	}
	return n
}
