package auth

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Limits bound password guessing. A count whose limit is zero or less is
// not kept. They count *distinct* wrong passwords,
// so a phone retrying one stale password counts once, and they spare the
// owner: a network the user has logged in from is not locked out by an
// attack on the account from elsewhere, nor by the owner's own typos
// beyond PerPair.
type Limits struct {
	// PerPair is how many distinct wrong passwords one network may try for
	// one user before its attempts for that user are refused without
	// asking the backend.
	PerPair int
	// PerUser is how many distinct wrong passwords, from all networks
	// together, lock a user for the networks it never logged in from.
	PerUser int
	// PerNetwork is how many distinct wrong logins (user and password),
	// for all users together, lock a network out, except for the users
	// that logged in from it before.
	PerNetwork int
	// Window is how long a count lasts after its last failure: an
	// attacker must stay quiet this long to get a fresh budget.
	Window time.Duration
	// Remember is how long a successful login spares its (user,
	// network) pair from the user and network locks.
	Remember time.Duration
	// Trusted networks (webmail, monitoring) are never limited or counted.
	Trusted []netip.Prefix
	// MaxTracked bounds the records kept in memory; the oldest-looking
	// ones go first when it is reached.
	MaxTracked int
}

// DefaultLimits are the limits when no setting changes them.
var DefaultLimits = Limits{
	PerPair:    10,
	PerUser:    30,
	PerNetwork: 100,
	Window:     15 * time.Minute,
	Remember:   7 * 24 * time.Hour,
	MaxTracked: 100_000,
}

// recordKind separates the three kinds of failure counts and the
// remembered successes in one map.
type recordKind uint8

const (
	kindPair recordKind = iota
	kindUser
	kindNetwork
	kindGood
)

type recordKey struct {
	kind    recordKind
	user    string
	network netip.Prefix
}

// record is one count of distinct wrong passwords, as the fingerprints
// seen (at most the limit's worth), or a remembered success.
type record struct {
	seen    []uint64
	expires time.Time
}

// limiter keeps the counts for Limits. It is safe for concurrent use.
type limiter struct {
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	records map[recordKey]*record
	// pending counts the checks in flight per count and fingerprint,
	// and pendingDistinct the distinct fingerprints per count. A guesser
	// who sends many passwords at once must not get them all past a limit
	// that only counts failures already answered. (Two flat maps, so that
	// a request allocates nothing here once they have grown.)
	pending         map[pendingKey]int
	pendingDistinct map[recordKey]int
}

// pendingKey is one password being checked, on one count.
type pendingKey struct {
	recordKey
	fingerprint uint64
}

func newLimiter(l Limits) *limiter {
	return &limiter{limits: l, now: time.Now, records: make(map[recordKey]*record),
		pending: make(map[pendingKey]int), pendingDistinct: make(map[recordKey]int)}
}

// network is the client's network as the limits see it: a /24 for IPv4
// and a /48 for IPv6, the usual size of one site's allocation. Clients
// without an address share the zero prefix.
func network(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (l *limiter) trusted(ip netip.Addr) bool {
	for _, p := range l.limits.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// begin says whether a login for user from ip, with the password whose
// fingerprint is given, must be refused without asking the backend, which
// limit applied (pair, user or network) and why. When it is not refused,
// the check is counted as in flight until end: a password not yet known
// wrong counts against the limits while its check runs.
func (l *limiter) begin(user string, ip netip.Addr, fingerprint uint64) (blocked bool, limit string, why Reason) {
	if l == nil || l.trusted(ip) {
		return false, "", ""
	}
	keys := l.keys(user, ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.over(keys[0], fingerprint, l.limits.PerPair, now) {
		return true, "pair", ReasonTooManyForPair
	}
	if !l.live(recordKey{kindGood, user, keys[0].network}, now) {
		// Not the owner's own network: the locks an attacker elsewhere
		// can set off apply.
		if l.over(keys[1], fingerprint, l.limits.PerUser, now) {
			return true, "user", ReasonTooManyForUser
		}
		if l.over(keys[2], fingerprint, l.limits.PerNetwork, now) {
			return true, "network", ReasonTooManyFromNetwork
		}
	}
	for _, k := range keys {
		pk := pendingKey{k, fingerprint}
		if l.pending[pk] == 0 {
			l.pendingDistinct[k]++
		}
		l.pending[pk]++
	}
	return false, "", ""
}

// end ends a check begin let through.
func (l *limiter) end(user string, ip netip.Addr, fingerprint uint64) {
	if l == nil || l.trusted(ip) {
		return
	}
	keys := l.keys(user, ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		pk := pendingKey{k, fingerprint}
		if l.pending[pk]--; l.pending[pk] > 0 {
			continue
		}
		delete(l.pending, pk)
		if l.pendingDistinct[k]--; l.pendingDistinct[k] <= 0 {
			delete(l.pendingDistinct, k)
		}
	}
}

// keys are the pair, user and network counts a login from ip touches.
func (l *limiter) keys(user string, ip netip.Addr) [3]recordKey {
	net := network(ip)
	return [3]recordKey{{kindPair, user, net}, {kindUser, user, netip.Prefix{}}, {kindNetwork, "", net}}
}

// over reports whether one more distinct password on k would pass limit:
// the wrong passwords counted plus those being checked, unless fingerprint
// is one of them already (a retry of the same password costs nothing). A
// limit of zero or less is off.
func (l *limiter) over(k recordKey, fingerprint uint64, limit int, now time.Time) bool {
	if limit <= 0 {
		return false
	}
	n := 0
	if r, ok := l.records[k]; ok && now.Before(r.expires) {
		if slices.Contains(r.seen, fingerprint) {
			return false
		}
		n = len(r.seen)
	} else if ok {
		delete(l.records, k)
	}
	if l.pending[pendingKey{k, fingerprint}] > 0 {
		return false
	}
	return n+l.pendingDistinct[k] >= limit
}

// failure counts a wrong password, given by its fingerprint, and returns
// how many distinct wrong passwords the pair has tried now.
// The fingerprint covers user and password, so that on the network's
// count two users sharing one password count twice.
func (l *limiter) failure(user string, ip netip.Addr, fingerprint uint64) int {
	if l == nil || l.trusted(ip) {
		return 0
	}
	keys := l.keys(user, ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	pair := l.add(keys[0], fingerprint, l.limits.PerPair, now)
	l.add(keys[1], fingerprint, l.limits.PerUser, now)
	l.add(keys[2], fingerprint, l.limits.PerNetwork, now)
	return pair
}

// success forgets the pair's wrong passwords and remembers that user
// logs in from ip's network.
func (l *limiter) success(user string, ip netip.Addr) {
	if l == nil || l.trusted(ip) {
		return
	}
	net := network(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.records, recordKey{kindPair, user, net})
	k := recordKey{kindGood, user, net}
	if r, ok := l.records[k]; ok {
		r.expires = now.Add(l.limits.Remember)
		return
	}
	l.makeRoom(now)
	l.records[k] = &record{expires: now.Add(l.limits.Remember)}
}

func (l *limiter) live(k recordKey, now time.Time) bool {
	r, ok := l.records[k]
	return ok && now.Before(r.expires)
}

// add records fingerprint under k unless it was seen already, keeping
// at most limit fingerprints (more change no decision), and extends the
// window. It returns the count.
func (l *limiter) add(k recordKey, fingerprint uint64, limit int, now time.Time) int {
	if limit <= 0 {
		return 0
	}
	r, ok := l.records[k]
	if ok && !now.Before(r.expires) {
		r.seen = r.seen[:0]
	}
	if !ok {
		l.makeRoom(now)
		r = &record{}
		l.records[k] = r
	}
	r.expires = now.Add(l.limits.Window)
	if slices.Contains(r.seen, fingerprint) {
		return len(r.seen)
	}
	if len(r.seen) < limit {
		r.seen = append(r.seen, fingerprint)
	}
	return len(r.seen)
}

// makeRoom keeps the records under MaxTracked: expired ones go first,
// then, if need be, a random tenth (map order is random). Losing a count
// only gives a guesser a little more budget; losing a remembered success
// only means the owner is no longer spared.
func (l *limiter) makeRoom(now time.Time) {
	if max := l.limits.MaxTracked; max > 0 && len(l.records) >= max {
		makeRoom(l.records, max, func(r *record) bool { return !now.Before(r.expires) })
	}
}
