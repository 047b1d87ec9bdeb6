package state

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// Memory is a Store in the process: exact, and bounded by
// Limits.MaxTracked records of each kind (see table for what goes first
// when a kind is full).
type Memory struct {
	limits Limits
	digest *Digester
	now    func() time.Time

	mu     sync.Mutex
	tables [Owner + 1]*table // by Kind; [0] unused
	// pending counts the checks in flight per count and fingerprint, and
	// pendingDistinct the distinct fingerprints per count. (Two flat maps,
	// so that a check allocates nothing here once they have grown.)
	pending         map[pendingKey]int
	pendingDistinct map[countKey]int
}

type countKey struct {
	kind Kind
	recordKey
}

// pendingKey is one password being checked, on one count.
type pendingKey struct {
	countKey
	fingerprint uint64
}

// NewMemory returns an empty Memory holding to l, whose fingerprints use
// a key of its own (random, living only in this process).
func NewMemory(l Limits) *Memory {
	m := &Memory{limits: l, digest: NewDigester(nil), now: time.Now,
		pending: make(map[pendingKey]int), pendingDistinct: make(map[countKey]int)}
	for _, k := range []Kind{Pair, User, Network, Owner} {
		m.tables[k] = newTable(l.MaxTracked, l.limit(k))
	}
	return m
}

// Fingerprint implements Store.
func (m *Memory) Fingerprint(user, password string) uint64 {
	return m.digest.Fingerprint(user, password)
}

// keys are the count records an attempt touches.
func keys(user string, network netip.Prefix) [Network + 1]countKey {
	return [Network + 1]countKey{
		Pair:    {Pair, recordKey{user, network}},
		User:    {User, recordKey{user, netip.Prefix{}}},
		Network: {Network, recordKey{"", network}},
	}
}

// Blocked implements Store.
func (m *Memory) Blocked(_ context.Context, user string, network netip.Prefix) Kind {
	ks := keys(user, network)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refusing(ks, now, func(k countKey, limit int) bool {
		return m.tables[k.kind].count(k.recordKey, now) >= limit
	})
}

// refusing returns the first count, in the order pair, user, network, for
// which over says the limit is reached; the user and network counts do not
// apply on a network the user logged in from.
func (m *Memory) refusing(ks [Network + 1]countKey, now time.Time, over func(countKey, int) bool) Kind {
	if l := m.limits.PerPair; l > 0 && over(ks[Pair], l) {
		return Pair
	}
	if m.tables[Owner].get(ks[Pair].recordKey, now) != nil {
		return 0
	}
	if l := m.limits.PerUser; l > 0 && over(ks[User], l) {
		return User
	}
	if l := m.limits.PerNetwork; l > 0 && over(ks[Network], l) {
		return Network
	}
	return 0
}

// Begin implements Store. The deadline does not matter here: End always
// comes.
func (m *Memory) Begin(_ context.Context, a Attempt, _ time.Time) Kind {
	ks := keys(a.User, a.Network)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := m.refusing(ks, now, func(k countKey, limit int) bool { return m.over(k, a.Fingerprint, limit, now) }); k != 0 {
		return k
	}
	m.addPending(ks, a.Fingerprint)
	return 0
}

// addPending counts fingerprint in flight on ks.
func (m *Memory) addPending(ks [Network + 1]countKey, fingerprint uint64) {
	for _, k := range ks[Pair:] {
		pk := pendingKey{k, fingerprint}
		if m.pending[pk] == 0 {
			m.pendingDistinct[k]++
		}
		m.pending[pk]++
	}
}

// admitted counts a check in flight that another store admitted, so that
// this one, should it have to decide alone, knows it too.
func (m *Memory) admitted(a Attempt) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addPending(keys(a.User, a.Network), a.Fingerprint)
}

// refuses is Begin without counting the check in flight: the count that
// would refuse a, or 0.
func (m *Memory) refuses(a Attempt) Kind {
	ks := keys(a.User, a.Network)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refusing(ks, now, func(k countKey, limit int) bool { return m.over(k, a.Fingerprint, limit, now) })
}

// raise brings a's counts up to counts (pair, user, network), the counts
// another store holds, so that this one, should it have to decide alone,
// starts from them. The wrong passwords it has not seen are stood for by
// fingerprints of their own.
func (m *Memory) raise(a Attempt, counts [3]int) {
	ks := keys(a.User, a.Network)
	now := m.now()
	expires := now.Add(m.limits.Window)
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range ks[Pair:] {
		limit := m.limits.limit(k.kind)
		for n := m.tables[k.kind].count(k.recordKey, now); n < min(counts[i], limit); n++ {
			if m.tables[k.kind].add(k.recordKey, standIn(a.Fingerprint, n), limit, expires, now) == 0 {
				break
			}
		}
	}
}

// standIn is a fingerprint for the n-th wrong password another store
// counted: distinct from real ones for all practical purposes.
func standIn(fp uint64, n int) uint64 { return fp*0x9e3779b97f4a7c15 + uint64(n) + 1 }

// isOwner reports whether user has logged in from network, as far as
// this process knows.
func (m *Memory) isOwner(user string, network netip.Prefix) bool {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tables[Owner].get(recordKey{user, network}, now) != nil
}

// ownerSince returns when user's mark for network was last renewed here,
// or the zero time.
func (m *Memory) ownerSince(user string, network netip.Prefix) time.Time {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.tables[Owner].get(recordKey{user, network}, now); e != nil {
		return time.Unix(0, e.expires).Add(-m.limits.Remember)
	}
	return time.Time{}
}

// over reports whether one more distinct password on k would pass limit:
// the wrong passwords counted plus those being checked, unless fingerprint
// is one of them already.
func (m *Memory) over(k countKey, fingerprint uint64, limit int, now time.Time) bool {
	n := 0
	if e := m.tables[k.kind].get(k.recordKey, now); e != nil {
		if e.holds(fingerprint) {
			return false
		}
		n = int(e.n)
	}
	if m.pending[pendingKey{k, fingerprint}] > 0 {
		return false
	}
	return n+m.pendingDistinct[k] >= limit
}

// End implements Store.
func (m *Memory) End(_ context.Context, a Attempt) {
	ks := keys(a.User, a.Network)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range ks[Pair:] {
		pk := pendingKey{k, a.Fingerprint}
		if m.pending[pk]--; m.pending[pk] > 0 {
			continue
		}
		delete(m.pending, pk)
		if m.pendingDistinct[k]--; m.pendingDistinct[k] <= 0 {
			delete(m.pendingDistinct, k)
		}
	}
}

// Failure implements Store.
func (m *Memory) Failure(_ context.Context, a Attempt) int {
	ks := keys(a.User, a.Network)
	now := m.now()
	expires := now.Add(m.limits.Window)
	m.mu.Lock()
	defer m.mu.Unlock()
	var pair int
	for _, k := range ks[Pair:] {
		if limit := m.limits.limit(k.kind); limit > 0 {
			n := m.tables[k.kind].add(k.recordKey, a.Fingerprint, limit, expires, now)
			if k.kind == Pair {
				pair = n
			}
		}
	}
	return pair
}

// Success implements Store.
func (m *Memory) Success(_ context.Context, user string, network netip.Prefix) {
	k := recordKey{user, network}
	now := m.now()
	expires := now.Add(m.limits.Remember)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tables[Pair].delete(k)
	if e := m.tables[Owner].upsert(k, expires, 0, now); e != nil {
		m.tables[Owner].renew(e, expires)
	}
}

// Records implements Store.
func (m *Memory) Records(context.Context) ([]Record, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for kind := Pair; kind <= Owner; kind++ {
		limit := m.limits.limit(kind)
		t := m.tables[kind]
		for _, i := range t.index {
			e := t.at(i)
			if e.expires <= now.UnixNano() {
				continue
			}
			out = append(out, Record{Kind: kind, User: e.key.user, Network: e.key.network,
				Failures: int(e.n), Limit: limit, Blocked: limit > 0 && int(e.n) >= limit, Expires: time.Unix(0, e.expires)})
		}
	}
	return out, nil
}

// Lift implements Store.
func (m *Memory) Lift(_ context.Context, kind Kind, user string, network netip.Prefix) error {
	if kind < Pair || kind > Owner {
		return errUnknownKind
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tables[kind].delete(recordKey{user, network})
	return nil
}

// Len returns how many records of kind are kept, expired ones included
// until they are swept.
func (m *Memory) Len(kind Kind) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if kind < Pair || kind > Owner {
		return 0
	}
	return m.tables[kind].len()
}
