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
	for _, k := range ks[Pair:] {
		pk := pendingKey{k, a.Fingerprint}
		if m.pending[pk] == 0 {
			m.pendingDistinct[k]++
		}
		m.pending[pk]++
	}
	return 0
}

// over reports whether one more distinct password on k would pass limit:
// the wrong passwords counted plus those being checked, unless fingerprint
// is one of them already.
func (m *Memory) over(k countKey, fingerprint uint64, limit int, now time.Time) bool {
	n := 0
	if e := m.tables[k.kind].get(k.recordKey, now); e != nil {
		for _, f := range e.seen {
			if f == fingerprint {
				return false
			}
		}
		n = len(e.seen)
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
		for _, e := range m.tables[kind].entries {
			if !now.Before(e.expires) {
				continue
			}
			out = append(out, Record{Kind: kind, User: e.key.user, Network: e.key.network,
				Failures: len(e.seen), Limit: limit, Blocked: limit > 0 && len(e.seen) >= limit, Expires: e.expires})
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
	return len(m.tables[kind].entries)
}
