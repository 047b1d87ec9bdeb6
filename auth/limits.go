package auth

import (
	"context"
	"encoding/hex"
	"net/netip"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth/state"
)

// Limits bound password guessing. They count *distinct* wrong passwords,
// so a phone retrying one stale password counts once, and they spare the
// owner: a network the user has logged in from is not locked out by an
// attack on the account from elsewhere, nor by the owner's own typos
// beyond PerPair. A check the backend answered too late (Dovecot's auth
// penalty) counts like a wrong password, and checks in flight count
// before they finish.
type Limits struct {
	state.Limits
	// Trusted networks (webmail, monitoring) are never limited or counted.
	Trusted []netip.Prefix
}

// DefaultLimits are the limits when no setting changes them.
var DefaultLimits = Limits{Limits: state.DefaultLimits}

// limiter applies the Limits through a state.Store: it is the only thing
// the login pipeline asks about guesses. A nil *limiter limits nothing.
type limiter struct {
	store   state.Store
	trusted []netip.Prefix
}

// maxLimitUser is the longest user name the limits keep as it is; a
// longer one (nginx lets through a few KiB) is kept as a digest, so that
// a record's size is bounded.
const maxLimitUser = 256

// limitUser is the user as the limits count it: case folded like the
// selectors and Dovecot do, so that "Alice" and "alice" share one
// budget, and bounded in length.
func limitUser(d *state.Digester, user string) string {
	u := strings.ToLower(user)
	if len(u) <= maxLimitUser {
		return u
	}
	sum := d.Sum("long user", u)
	return "#" + hex.EncodeToString(sum[:16])
}

func (l *limiter) trustedIP(ip netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// applies reports whether the limits apply to a's client at all.
func (l *limiter) applies(a *attempt) bool {
	return l != nil && !l.trustedIP(a.req.ClientIP)
}

// stateAttempt is a as the store sees it; its fingerprint is made on
// first use, since an answer from the cache needs none.
func (l *limiter) stateAttempt(a *attempt) state.Attempt {
	if !a.fingerprinted {
		a.fingerprint = l.store.Fingerprint(a.limitUser, a.req.Password)
		a.fingerprinted = true
	}
	return state.Attempt{User: a.limitUser, Network: a.network, Fingerprint: a.fingerprint}
}

// blocked reports the count that refuses any login for a's user from a's
// network (0 for none), without a round trip to a shared store.
func (l *limiter) blocked(ctx context.Context, a *attempt) state.Kind {
	if !l.applies(a) {
		return 0
	}
	return l.store.Blocked(ctx, a.limitUser, a.network)
}

// begin admits a check of a, or reports the count that refuses it; an
// admitted check counts as in flight until end.
func (l *limiter) begin(ctx context.Context, a *attempt, deadline time.Time) (refused state.Kind, admitted bool) {
	if !l.applies(a) {
		return 0, false
	}
	if k := l.store.Begin(ctx, l.stateAttempt(a), deadline); k != 0 {
		return k, false
	}
	return 0, true
}

// end ends a check begin admitted.
func (l *limiter) end(ctx context.Context, a *attempt) {
	l.store.End(ctx, l.stateAttempt(a))
}

// failure counts a's password as wrong and returns how many distinct
// wrong passwords a's network has tried for the user now.
func (l *limiter) failure(ctx context.Context, a *attempt) int {
	if !l.applies(a) {
		return 0
	}
	return l.store.Failure(ctx, l.stateAttempt(a))
}

// success forgets the pair's count and marks a's network as the user's.
func (l *limiter) success(ctx context.Context, a *attempt) {
	if l.applies(a) {
		l.store.Success(ctx, a.limitUser, a.network)
	}
}

// limitNames and limitReasons say which count refused a login, in the
// verdict, the log and the metrics.
var (
	limitNames   = [...]string{state.Pair: "pair", state.User: "user", state.Network: "network"}
	limitReasons = [...]Reason{state.Pair: ReasonTooManyForPair, state.User: ReasonTooManyForUser, state.Network: ReasonTooManyFromNetwork}
)
