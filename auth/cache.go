package auth

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

// loginCache remembers, for a short time, which credentials a backend
// accepted, so that a mail client reconnecting (or opening five
// connections at once) costs the backend one check, not one per
// connection. It holds one entry per (backend, protocol, user): a keyed
// digest of the last verified password. A different password never
// matches, and a refused one drops the entry.
//
// Entries are keyed by a 128-bit hash of the cacheKey under seeds of this
// process, not by its strings: an entry is then 85 to 135 bytes with no
// pointer in it, where the three strings and a copy of the user's name
// made it 170 to 260 (BenchmarkCacheEntries, 10k to 1M entries), and a
// cache of a million entries is nothing for the collector to trace. Two
// keys sharing a hash would share an entry: for two users that costs a
// check at most (the digest stored covers the user and the password), but
// for one user on two backends or protocols it would count a login
// verified on one for the other, hence 128 bits (a chance of about 2^-88
// that any two of a million keys collide), under seeds an attacker never
// sees.
type loginCache struct {
	ttl   time.Duration
	max   int
	now   func() time.Time
	seeds [2]maphash.Seed

	mu      sync.Mutex
	entries map[keyHash]cacheEntry
}

// keyHash is a cacheKey's hash, an entry's key.
type keyHash [2]uint64

// cacheKey names whose login an entry is for; newCacheKey makes one.
type cacheKey struct {
	backend, protocol, user string
}

// newCacheKey is the key of user's entry for backend and protocol. The
// user is folded, so that the operator can find and flush an entry
// whatever the case it was logged in with: a login as "Alice" and one as
// "alice" share the entry, and since its digest covers the user as sent,
// the other's login is checked once more, nothing else.
func newCacheKey(backend, protocol, user string) cacheKey {
	return cacheKey{backend: backend, protocol: protocol, user: strings.ToLower(user)}
}

type cacheEntry struct {
	sum     [sha256.Size]byte
	expires int64 // Unix nanoseconds
}

// newLoginCache returns a cache of at most max entries, each kept for ttl.
// A ttl of zero or less returns nil, which is a cache that never hits.
func newLoginCache(ttl time.Duration, max int) *loginCache {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &loginCache{ttl: ttl, max: max, now: time.Now, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		entries: make(map[keyHash]cacheEntry)}
}

// hash returns k's entry key.
func (c *loginCache) hash(k cacheKey) keyHash {
	return keyHash{maphash.Comparable(c.seeds[0], k), maphash.Comparable(c.seeds[1], k)}
}

// hit reports whether sum is the digest last verified for k, within ttl.
func (c *loginCache) hit(k cacheKey, sum [sha256.Size]byte) bool {
	if c == nil {
		return false
	}
	kh, now := c.hash(k), c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[kh]
	if !ok {
		return false
	}
	if now >= e.expires {
		delete(c.entries, kh)
		return false
	}
	return hmac.Equal(e.sum[:], sum[:])
}

// store remembers sum as verified for k.
func (c *loginCache) store(k cacheKey, sum [sha256.Size]byte) {
	if c == nil {
		return
	}
	kh, now := c.hash(k), c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[kh]; !ok && len(c.entries) >= c.max {
		c.makeRoom(now)
	}
	c.entries[kh] = cacheEntry{sum: sum, expires: now.Add(c.ttl).UnixNano()}
}

// forget drops k's entry: the backend has just refused a password for k,
// which may mean the password was changed.
func (c *loginCache) forget(k cacheKey) {
	if c == nil {
		return
	}
	kh := c.hash(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, kh)
}

// makeRoom drops expired entries, and if the cache is still full, about a
// tenth of the rest; a dropped entry costs one more check, nothing else.
func (c *loginCache) makeRoom(now time.Time) {
	makeRoom(c.entries, c.max, func(e cacheEntry) bool { return now.UnixNano() >= e.expires })
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

// cacheProtocols are the protocols an entry can be for: the protocol the
// check speaks (checkProtocol: an SMTP login is checked over IMAP or POP3).
var cacheProtocols = []string{string(imapcheck.IMAP), string(imapcheck.POP3)}

// lookupUser lists the live entries for user on backends (entries are
// keyed by a hash, so the cache cannot list them by user itself; user
// names match case-insensitively, as the key folds them).
func (c *loginCache) lookupUser(user string, backends []string) []CachedLogin {
	if c == nil {
		return nil
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []CachedLogin
	for _, b := range backends {
		for _, p := range cacheProtocols {
			if e, ok := c.entries[c.hash(newCacheKey(b, p, user))]; ok && now < e.expires {
				out = append(out, CachedLogin{Backend: b, Protocol: p, Expires: time.Unix(0, e.expires)})
			}
		}
	}
	slices.SortFunc(out, func(a, b CachedLogin) int {
		return cmp.Or(strings.Compare(a.Backend, b.Backend), strings.Compare(a.Protocol, b.Protocol))
	})
	return out
}

// forgetUser drops every entry for user on backends (after a password
// change, so that the next login is checked) and returns how many live
// ones it dropped.
func (c *loginCache) forgetUser(user string, backends []string) int {
	if c == nil {
		return 0
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, b := range backends {
		for _, p := range cacheProtocols {
			kh := c.hash(newCacheKey(b, p, user))
			if e, ok := c.entries[kh]; ok {
				if now < e.expires {
					n++
				}
				delete(c.entries, kh)
			}
		}
	}
	return n
}
