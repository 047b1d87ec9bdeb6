// Package state keeps what the guessing limits remember: per (user,
// network), per user and per network, the keyed digests of the distinct
// wrong passwords tried, the checks in flight, and which networks each
// user has logged in from. Memory keeps it in the process; Redis shares it
// between imapgates through a Redis or Valkey server, and falls back to a
// Memory of its own while that server cannot be reached.
//
// The package decides nothing about nginx or mail: it answers "is this
// attempt over a limit?" and records what became of it.
package state

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Kind is what a record counts.
type Kind uint8

// The kinds of record.
const (
	// Pair counts the distinct wrong passwords for one user from one
	// network.
	Pair Kind = iota + 1
	// User counts them for one user from every network.
	User
	// Network counts the distinct wrong logins (user and password) from
	// one network, for every user.
	Network
	// Owner is not a count: it marks that the user logged in from the
	// network, which spares that network the User and Network locks.
	Owner
)

var kindNames = [...]string{Pair: "pair", User: "user", Network: "network", Owner: "owner"}

// String returns the kind's name: pair, user, network or owner.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "none"
}

// Limits are the numbers the counts are held to. A limit of zero or less
// is off and its count is not kept.
type Limits struct {
	// PerPair is how many distinct wrong passwords one network may try for
	// one user before its attempts for that user are refused.
	PerPair int
	// PerUser is how many distinct wrong passwords, from all networks
	// together, lock a user for the networks it never logged in from.
	PerUser int
	// PerNetwork is how many distinct wrong logins, for all users
	// together, lock a network out, except for the users that logged in
	// from it before.
	PerNetwork int
	// Window is how long a count lasts after its last failure: an
	// attacker must stay quiet this long to get a fresh budget.
	Window time.Duration
	// Remember is how long a successful login spares its (user, network)
	// pair from the User and Network locks.
	Remember time.Duration
	// MaxTracked bounds the records of each kind a Memory keeps (so four
	// times this in all); see Memory for what goes when it is reached.
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

// limit returns the limit of a count kind.
func (l Limits) limit(k Kind) int {
	switch k {
	case Pair:
		return l.PerPair
	case User:
		return l.PerUser
	case Network:
		return l.PerNetwork
	}
	return 0
}

// NetworkOf is the client's network as the limits see it: a /24 for IPv4
// and a /48 for IPv6, the usual size of one site's allocation. Clients
// without an address share the zero prefix.
func NetworkOf(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Attempt is one login as the limits see it.
type Attempt struct {
	// User is the user as the limits count it (case folded).
	User string
	// Network is the client's network (NetworkOf).
	Network netip.Prefix
	// Fingerprint is the store's keyed digest of user and password
	// (Store.Fingerprint): a password tried twice counts once, and two
	// users sharing one password count twice on the network's count.
	Fingerprint uint64
}

// Store keeps the counts. Every method is safe for concurrent use, and
// none fails: a store that cannot reach its server decides locally.
type Store interface {
	// Fingerprint is the keyed digest of user and password that Begin,
	// End and Failure take. The key is never derived from a password.
	Fingerprint(user, password string) uint64
	// Blocked reports which count refuses any login of user from
	// network, from what is known here without a round trip to a server;
	// 0 when none does. It serves the answers that need no check (the
	// verified-login cache), so it must be fast.
	Blocked(ctx context.Context, user string, network netip.Prefix) Kind
	// Begin admits a check of a, or reports the count that refuses it.
	// A password not yet known wrong counts as in flight until End (or,
	// on a shared store, until deadline if End never comes), so that
	// concurrent guesses cannot pass a limit together. A password
	// already counted, or already in flight, is admitted: it costs
	// nothing more.
	Begin(ctx context.Context, a Attempt, deadline time.Time) Kind
	// End ends a check Begin admitted.
	End(ctx context.Context, a Attempt)
	// Failure counts a's password as wrong (or withheld by the backend)
	// on the pair, user and network counts, and returns the pair's count.
	Failure(ctx context.Context, a Attempt) int
	// Success forgets the pair's count and marks that user logs in from
	// network.
	Success(ctx context.Context, user string, network netip.Prefix)
	// Records lists every live record, for the operator.
	Records(ctx context.Context) ([]Record, error)
	// Lift forgets one record: a count (and so its block) or an owner
	// mark. User is empty for a Network record, network the zero prefix
	// for a User record.
	Lift(ctx context.Context, kind Kind, user string, network netip.Prefix) error
}

// Record is one count or owner mark, as Records lists it (and the admin
// API shows it, in JSON).
type Record struct {
	Kind Kind `json:"kind"`
	// User is empty for a Network count; Network is the zero prefix for a
	// User count.
	User    string       `json:"user,omitempty"`
	Network netip.Prefix `json:"network,omitzero"`
	// Failures is the number of distinct wrong passwords counted (at most
	// Limit; 0 for an Owner mark), Limit the count's limit.
	Failures int `json:"count"`
	Limit    int `json:"limit"`
	// Blocked says the count has reached its limit.
	Blocked bool `json:"blocked"`
	// Expires is when the record is forgotten unless renewed.
	Expires time.Time `json:"expires"`
}

// MarshalText writes the kind's name (String), for JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name back.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, name := range kindNames {
		if name != "" && name == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("state: %q is not pair, user, network or owner", b)
}

// errUnknownKind is returned for a Kind that names no record.
var errUnknownKind = errors.New("state: unknown record kind")
