package auth

import (
	"net/netip"
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
}

func newLimiter(l Limits) *limiter {
	return &limiter{limits: l, now: time.Now, records: make(map[recordKey]*record)}
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

// blocked says whether a login for user from ip must be refused without
// asking the backend, which limit applied (pair, user or network) and why.
func (l *limiter) blocked(user string, ip netip.Addr) (blocked bool, limit, why string) {
	if l == nil || l.trusted(ip) {
		return false, "", ""
	}
	net := network(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if over(l.count(recordKey{kindPair, user, net}, now), l.limits.PerPair) {
		return true, "pair", "too many wrong passwords for this user from this network"
	}
	if l.live(recordKey{kindGood, user, net}, now) {
		// The owner's own network: spared from locks that an attacker
		// elsewhere can set off.
		return false, "", ""
	}
	if over(l.count(recordKey{kindUser, user, netip.Prefix{}}, now), l.limits.PerUser) {
		return true, "user", "too many wrong passwords for this user"
	}
	if over(l.count(recordKey{kindNetwork, "", net}, now), l.limits.PerNetwork) {
		return true, "network", "too many wrong passwords from this network"
	}
	return false, "", ""
}

// over reports whether count reached limit; a limit of zero or less is off.
func over(count, limit int) bool {
	return limit > 0 && count >= limit
}

// failure counts a wrong password, given by its fingerprint, and returns
// how many distinct wrong passwords the pair has tried now.
// The fingerprint covers user and password, so that on the network's
// count two users sharing one password count twice.
func (l *limiter) failure(user string, ip netip.Addr, fingerprint uint64) int {
	if l == nil || l.trusted(ip) {
		return 0
	}
	net := network(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	pair := l.add(recordKey{kindPair, user, net}, fingerprint, l.limits.PerPair, now)
	l.add(recordKey{kindUser, user, netip.Prefix{}}, fingerprint, l.limits.PerUser, now)
	l.add(recordKey{kindNetwork, "", net}, fingerprint, l.limits.PerNetwork, now)
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

// count returns the live count of k.
func (l *limiter) count(k recordKey, now time.Time) int {
	r, ok := l.records[k]
	if !ok {
		return 0
	}
	if !now.Before(r.expires) {
		delete(l.records, k)
		return 0
	}
	return len(r.seen)
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
	for _, f := range r.seen {
		if f == fingerprint {
			return len(r.seen)
		}
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
	max := l.limits.MaxTracked
	if max <= 0 || len(l.records) < max {
		return
	}
	for k, r := range l.records {
		if !now.Before(r.expires) {
			delete(l.records, k)
		}
	}
	for k := range l.records {
		if len(l.records) < max-max/10 {
			break
		}
		delete(l.records, k)
	}
}
