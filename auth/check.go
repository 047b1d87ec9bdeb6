package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/imapcheck"
)

// checkResult is what the verify stage found out: the verifier's outcome
// and error, and how it was learnt.
type checkResult struct {
	outcome imapcheck.Outcome
	err     error
	// cached: the cache knew this password was accepted; coalesced: the
	// answer came from a check another request made at the same moment.
	cached, coalesced bool
	// refused is the count that did not admit the check (it never ran);
	// admitted says the limits count it in flight until end.
	refused  state.Kind
	admitted bool
	// took is how long the backend login took.
	took time.Duration
}

// errNoSlot is wrapped by the error of a check that found no free slot
// on its backend before its deadline.
var errNoSlot = errors.New("no check slot free")

// cacheKey is the attempt's entry in the verified-login cache: per
// (backend, protocol, user), holding the digest of user and password, so a
// hit means this very password was accepted.
func (t target) cacheKey(a *attempt) cacheKey {
	return newCacheKey(t.backend.Name, string(t.proto), a.req.User)
}

// verify learns whether the backend accepts the attempt's credentials:
// from the cache, or, once the limits admit a check, from an identical
// check already running or a login of its own once a check slot of the
// backend is free.
func (h *Handler) verify(ctx context.Context, a *attempt, t target) checkResult {
	key := t.cacheKey(a)
	// A trial must reach the backend: that is what it is for.
	hit := !t.trial && h.cache.hit(key, a.sum)
	if h.cache != nil {
		h.Metrics.cacheLookup(hit)
	}
	if hit {
		return checkResult{outcome: imapcheck.OK, cached: true}
	}
	// Counted before it runs: concurrent guesses cannot pass a limit
	// together.
	deadline, _ := ctx.Deadline()
	refused, admitted := h.limiter.begin(ctx, a, deadline)
	if refused != 0 {
		return checkResult{refused: refused}
	}
	// Identical checks at the same moment (a client opening several
	// connections) share one backend login. The digest covers the
	// password, so only the very same credentials are shared.
	var ranHere bool
	res, _, shared := h.flight.Do(key.backend+"\x00"+key.protocol+"\x00"+key.user+"\x00"+string(a.sum[:]), func() (any, error) {
		ranHere = true
		return h.check(ctx, a, t), nil
	})
	r := res.(checkResult)
	// shared is true for every caller, the one that ran the check too.
	if r.coalesced = shared && !ranHere; r.coalesced {
		h.Metrics.coalescedCheck()
	}
	r.admitted = admitted
	return r
}

// check logs in to the backend, once one of its check slots is free.
func (h *Handler) check(ctx context.Context, a *attempt, t target) checkResult {
	release, err := h.slots.acquire(ctx, t.backend.Name, h.shareOf(a))
	if err != nil {
		return checkResult{outcome: imapcheck.Temporary,
			err: fmt.Errorf("%w: waiting for one of the %d of backend %s: %w", errNoSlot, h.MaxChecks, t.backend.Name, err)}
	}
	defer release()
	if t.trial && h.TrialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.TrialTimeout)
		defer cancel()
	}
	start := time.Now()
	done := h.Metrics.checkStarted(t.backend.Name, string(t.proto))
	outcome, err := h.Verifier.Verify(ctx, imapcheck.Request{
		Protocol:   t.proto,
		Address:    t.check.String(),
		ServerName: t.check.Host,
		Security:   t.backend.CheckTLS.Security,
		Roots:      t.backend.CheckTLS.Roots,
		User:       a.req.User,
		Password:   a.req.Password,
		ClientIP:   a.req.ClientIP,
	})
	done(outcome.String())
	if h.Health != nil {
		h.Health.Observe(t.backend.Name, t.check, a.req.ClientIP, outcome, err)
	}
	return checkResult{outcome: outcome, err: err, took: time.Since(start)}
}

// shareOf is the network whose share of the check slots a's check takes:
// none for a trusted network (a webmail's every user comes from it).
func (h *Handler) shareOf(a *attempt) netip.Prefix {
	if h.Limits != nil && (&limiter{trusted: h.Limits.Trusted}).trustedIP(a.req.ClientIP) {
		return netip.Prefix{}
	}
	return a.network
}
