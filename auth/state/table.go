package state

import (
	"net/netip"
	"slices"
	"time"
)

// recordKey names one record of a table.
type recordKey struct {
	user    string
	network netip.Prefix
}

// entry is one record: the fingerprints of the distinct wrong passwords
// counted (at most the limit's worth: more change no decision), or none
// for an owner mark. Entries of one level form a list, oldest first.
type entry struct {
	key        recordKey
	seen       []uint64
	expires    time.Time
	level      int
	prev, next *entry
}

// list is the entries of one level, least recently changed at head.
type list struct{ head, tail *entry }

func (l *list) push(e *entry) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *list) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// table keeps the records of one kind, at most max of them.
//
// What goes when it is full is chosen so that a flood cannot reset a count
// that is about to matter: a count's level is how many distinct wrong
// passwords it holds, and room is made by dropping the expired records,
// then the least recently changed record of the lowest level, and only if
// that level is no higher than the newcomer's. A flood of new records
// (each at level 1) thus only ever displaces other level-1 records; a
// count of 2 or more is dropped only by its own expiry, or once every
// record below it is gone. When every record outranks the newcomer, the
// newcomer is not kept. Owner marks all have level 0: the least recently
// renewed goes first.
type table struct {
	max       int
	entries   map[recordKey]*entry
	levels    []list // by level: 0 .. the kind's limit
	lastSweep time.Time
}

// sweepEvery bounds how often a full table is swept for expired records
// (a pass over all of them).
const sweepEvery = time.Second

func newTable(max, limit int) *table {
	return &table{max: max, entries: make(map[recordKey]*entry), levels: make([]list, max0(limit)+1)}
}

func max0(n int) int { return max(n, 0) }

// get returns k's live entry, dropping it if it has expired.
func (t *table) get(k recordKey, now time.Time) *entry {
	e, ok := t.entries[k]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		t.drop(e)
		return nil
	}
	return e
}

// count returns how many distinct wrong passwords k holds now.
func (t *table) count(k recordKey, now time.Time) int {
	if e := t.get(k, now); e != nil {
		return len(e.seen)
	}
	return 0
}

func (t *table) drop(e *entry) {
	t.levels[e.level].remove(e)
	delete(t.entries, e.key)
}

// delete forgets k.
func (t *table) delete(k recordKey) {
	if e, ok := t.entries[k]; ok {
		t.drop(e)
	}
}

// upsert returns k's live entry, or a new one at level 0 expiring at
// expires, or nil when the table is full of records that outrank a new
// one at level newLevel.
func (t *table) upsert(k recordKey, expires time.Time, newLevel int, now time.Time) *entry {
	if e := t.get(k, now); e != nil {
		return e
	}
	if t.max > 0 && len(t.entries) >= t.max && !t.makeRoom(newLevel, now) {
		return nil
	}
	e := &entry{key: k, expires: expires}
	t.entries[k] = e
	t.levels[0].push(e)
	return e
}

// makeRoom drops one record for a newcomer of level newLevel: an expired
// one, else the oldest of the lowest level if that level is not above
// newLevel. It reports whether there is room now.
func (t *table) makeRoom(newLevel int, now time.Time) bool {
	if now.Sub(t.lastSweep) >= sweepEvery {
		t.lastSweep = now
		for _, e := range t.entries {
			if !now.Before(e.expires) {
				t.drop(e)
			}
		}
		if len(t.entries) < t.max {
			return true
		}
	}
	for level := range t.levels {
		if level > newLevel {
			return false
		}
		if e := t.levels[level].head; e != nil {
			t.drop(e)
			return true
		}
	}
	return false
}

// renew sets e's expiry and moves it to the tail of level (its count, or
// 0 for an owner mark): the most recently changed of its level.
func (t *table) renew(e *entry, expires time.Time) {
	t.levels[e.level].remove(e)
	e.expires = expires
	e.level = min(len(e.seen), len(t.levels)-1)
	t.levels[e.level].push(e)
}

// add counts fingerprint on k (unless seen already, or the count is at
// limit) and extends k's window to expires. It returns the count, which
// is 0 when the table kept no record for k.
func (t *table) add(k recordKey, fingerprint uint64, limit int, expires, now time.Time) int {
	e := t.upsert(k, expires, 1, now)
	if e == nil {
		return 0
	}
	if !slices.Contains(e.seen, fingerprint) && len(e.seen) < limit {
		e.seen = append(e.seen, fingerprint)
	}
	t.renew(e, expires)
	return len(e.seen)
}
