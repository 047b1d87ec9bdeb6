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
// for an owner mark. The first fingerprint is kept inline, since most
// records (a flood's) never hold a second. Entries live in the table's
// arena and link to the others of their level by index, oldest first, so
// that a record costs no allocation of its own and the collector has
// little to trace. The arena is made of chunks that never move: a table
// that grows copies nothing.
type entry struct {
	key        recordKey
	first      uint64
	more       *[]uint64 // the others, for the few records that have any
	expires    int64     // Unix nanoseconds
	prev, next int32
	n          uint8 // fingerprints held: the entry's level, for a count
	level      uint8
}

// none is the index of no entry.
const none = -1

// holds reports whether e counts fingerprint.
func (e *entry) holds(fingerprint uint64) bool {
	return e.n > 0 && e.first == fingerprint || e.more != nil && slices.Contains(*e.more, fingerprint)
}

// list is the entries of one level, least recently changed at head.
type list struct{ head, tail int32 }

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
	index     map[recordKey]int32
	chunks    [][]entry // the arena, chunks of 1<<chunkBits entries
	chunkBits uint8
	used      int32 // entries of the arena handed out, free ones included
	free      []int32
	levels    []list // by level: 0 .. the kind's limit
	lastSweep time.Time
}

// maxChunkBits sets the largest chunk of a table's arena: 4,096 entries,
// some 360 KiB. The arena was one slice, made for up to 128Ki records at
// once and grown by append beyond: with IMAPGATE_LIMIT_MAX_TRACKED at 1M,
// filling a table copied it again at each growth, some 5 times its size
// in garbage (BenchmarkRecords: 780 MB allocated for 1M owner marks, and
// twice the time per record of 100k). Chunks are made as records arrive:
// an arena made at once would also count as live heap from the start and
// raise the collector's goal, and the peak RSS, by tens of MiB.
const maxChunkBits = 12

// sweepEvery bounds how often a full table is swept for expired records
// (a pass over all of them).
const sweepEvery = time.Second

func newTable(max, limit int) *table {
	// Levels are a byte: a limit above 255 counts at most 255.
	t := &table{max: max, index: make(map[recordKey]int32), levels: make([]list, min(max0(limit), 255)+1),
		chunkBits: maxChunkBits}
	// A small table (tests, a low setting) gets one chunk its size.
	for max > 0 && t.chunkBits > 0 && 1<<(t.chunkBits-1) >= max {
		t.chunkBits--
	}
	for i := range t.levels {
		t.levels[i] = list{none, none}
	}
	return t
}

func max0(n int) int { return max(n, 0) }

func (t *table) at(i int32) *entry {
	return &t.chunks[i>>t.chunkBits][i&(1<<t.chunkBits-1)]
}

// grow hands out the arena's next entry, making a chunk when need be.
func (t *table) grow() int32 {
	i := t.used
	if int(i>>t.chunkBits) == len(t.chunks) {
		t.chunks = append(t.chunks, make([]entry, 1<<t.chunkBits))
	}
	t.used++
	return i
}

func (t *table) push(i int32) {
	e := t.at(i)
	l := &t.levels[e.level]
	e.prev, e.next = l.tail, none
	if l.tail != none {
		t.at(l.tail).next = i
	} else {
		l.head = i
	}
	l.tail = i
}

func (t *table) unlink(i int32) {
	e := t.at(i)
	l := &t.levels[e.level]
	if e.prev != none {
		t.at(e.prev).next = e.next
	} else {
		l.head = e.next
	}
	if e.next != none {
		t.at(e.next).prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = none, none
}

// get returns k's live entry, dropping it if it has expired.
func (t *table) get(k recordKey, now time.Time) *entry {
	i, ok := t.index[k]
	if !ok {
		return nil
	}
	if t.at(i).expires <= now.UnixNano() {
		t.drop(i)
		return nil
	}
	return t.at(i)
}

// count returns how many distinct wrong passwords k holds now.
func (t *table) count(k recordKey, now time.Time) int {
	if e := t.get(k, now); e != nil {
		return int(e.n)
	}
	return 0
}

func (t *table) drop(i int32) {
	t.unlink(i)
	delete(t.index, t.at(i).key)
	*t.at(i) = entry{prev: none, next: none}
	t.free = append(t.free, i)
}

// delete forgets k.
func (t *table) delete(k recordKey) {
	if i, ok := t.index[k]; ok {
		t.drop(i)
	}
}

// upsert returns k's live entry, or a new one at level 0 expiring at
// expires, or nil when the table is full of records that outrank a new
// one at level newLevel.
func (t *table) upsert(k recordKey, expires time.Time, newLevel int, now time.Time) *entry {
	if e := t.get(k, now); e != nil {
		return e
	}
	if t.max > 0 && len(t.index) >= t.max && !t.makeRoom(newLevel, now) {
		return nil
	}
	var i int32
	if n := len(t.free); n > 0 {
		i, t.free = t.free[n-1], t.free[:n-1]
	} else {
		i = t.grow()
	}
	*t.at(i) = entry{key: k, expires: expires.UnixNano(), prev: none, next: none}
	t.index[k] = i
	t.push(i)
	return t.at(i)
}

// makeRoom drops one record for a newcomer of level newLevel: an expired
// one, else the oldest of the lowest level if that level is not above
// newLevel. It reports whether there is room now.
func (t *table) makeRoom(newLevel int, now time.Time) bool {
	if now.Sub(t.lastSweep) >= sweepEvery {
		t.lastSweep = now
		for _, i := range t.index {
			if t.at(i).expires <= now.UnixNano() {
				t.drop(i)
			}
		}
		if len(t.index) < t.max {
			return true
		}
	}
	for level := range t.levels {
		if level > newLevel {
			return false
		}
		if i := t.levels[level].head; i != none {
			t.drop(i)
			return true
		}
	}
	return false
}

// renew sets e's expiry and moves it to the tail of its level (its count,
// or 0 for an owner mark): the most recently changed of its level.
func (t *table) renew(e *entry, expires time.Time) {
	i := t.index[e.key]
	t.unlink(i)
	e.expires = expires.UnixNano()
	e.level = min(e.n, uint8(len(t.levels)-1))
	t.push(i)
}

// add counts fingerprint on k (unless seen already, or the count is at
// limit) and extends k's window to expires. It returns the count, which
// is 0 when the table kept no record for k.
func (t *table) add(k recordKey, fingerprint uint64, limit int, expires, now time.Time) int {
	e := t.upsert(k, expires, 1, now)
	if e == nil {
		return 0
	}
	if !e.holds(fingerprint) && int(e.n) < min(limit, 255) {
		switch {
		case e.n == 0:
			e.first = fingerprint
		case e.more == nil:
			e.more = &[]uint64{fingerprint}
		default:
			*e.more = append(*e.more, fingerprint)
		}
		e.n++
	}
	t.renew(e, expires)
	return int(e.n)
}

// len returns the records kept, expired ones included until swept.
func (t *table) len() int { return len(t.index) }
