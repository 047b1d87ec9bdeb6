package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// decide answers one parsed request.
func (h *Handler) decide(ctx context.Context, req Request) Verdict {
	switch req.Method {
	case MethodNone:
		return h.relay(ctx, req)
	case MethodAPOP, MethodCRAMMD5, MethodExternal:
		// These methods give imapgate a digest or a certificate, not the
		// password, and nginx then needs the cleartext password back to log
		// in to the backend; a pass-through authenticator has neither.
		return Verdict{Outcome: OutcomeUnsupported, Reason: ReasonMethod, Cause: fmt.Errorf("method %s", req.Method)}
	}
	return h.login(ctx, req)
}

// relay answers SMTP without authentication, which needs a policy, not a
// login check.
func (h *Handler) relay(ctx context.Context, req Request) Verdict {
	switch {
	case req.Protocol != imapcheck.SMTP:
		return Verdict{Outcome: OutcomeMalformed, Reason: ReasonMethodNone}
	case h.SMTPRelay == nil:
		return Verdict{Outcome: OutcomeRefused, Reason: ReasonNoRelay}
	}
	return h.sendTo(ctx, req, h.SMTPRelay, Verdict{Outcome: OutcomeOK, Reason: ReasonRelay})
}

// attempt is a cleartext login on its way through the pipeline.
type attempt struct {
	req Request
	// limitUser is the user as the limits count it (limitUser), network
	// the client's network as they see it.
	limitUser string
	network   netip.Prefix
	// sum is a keyed digest of user and password; it serves the cache and
	// the coalescing, so the password itself is kept nowhere.
	sum [sha256.Size]byte
	// fingerprint is the limits' store's digest of user and password,
	// made on first use (fingerprinted).
	fingerprint   uint64
	fingerprinted bool
}

// target is where an attempt is checked and where nginx goes after.
type target struct {
	backend *backend.Backend
	rule    string
	// stale names the directory that routed with an expired answer.
	stale string
	// proto is the protocol the check logs in with; check its address.
	proto imapcheck.Protocol
	check backend.Endpoint
	// trial: the backend is marked down or degraded, and this check is
	// the one allowed to find out whether it is back.
	trial bool
	// drained names the backend the operator drained to this one.
	drained string
}

// login verifies a cleartext login: guard (the guessing limits), hold (the
// operator's hold on the user), route (the user's backend, the operator's
// drain of it, and whether it can be asked), verify (the cache, or a real
// login on the backend once the limits admit it) and conclude (what the
// result means for the client, the cache and the limits).
func (h *Handler) login(ctx context.Context, req Request) Verdict {
	if req.User == "" || req.Password == "" {
		return Verdict{Outcome: OutcomeRejected, Reason: ReasonEmptyCredentials}
	}
	a := &attempt{req: req, limitUser: limitUser(h.fp, req.User), network: state.NetworkOf(req.ClientIP)}
	a.sum = h.fp.Sum(a.limitUser, req.Password)
	if v, blocked := h.guard(ctx, a); blocked {
		return v
	}
	if v, held := h.hold(a); held {
		return v
	}
	t, v, ok := h.route(ctx, a)
	if !ok {
		return v
	}
	if t.trial {
		defer h.Health.EndTrial(t.backend.Name)
	}
	res := h.verify(ctx, a, t)
	if res.admitted {
		// After conclude has counted the result, so that the count never
		// dips between the two.
		defer h.limiter.end(ctx, a)
	}
	return h.conclude(ctx, a, t, res)
}

// guard refuses, without asking the backend, an attempt whose user or
// network the guessing limits have blocked.
func (h *Handler) guard(ctx context.Context, a *attempt) (Verdict, bool) {
	if k := h.limiter.blocked(ctx, a); k != 0 {
		return h.throttled(k), true
	}
	return Verdict{}, false
}

// throttled is the verdict on an attempt the count of kind k refused.
func (h *Handler) throttled(k state.Kind) Verdict {
	h.Metrics.throttle(limitNames[k])
	return Verdict{Outcome: OutcomeThrottled, Reason: limitReasons[k], Limit: limitNames[k]}
}

// route finds the attempt's backend and the address to check it on, and
// answers at once when it cannot be checked there.
func (h *Handler) route(ctx context.Context, a *attempt) (target, Verdict, bool) {
	var trace backend.Trace
	r, err := h.Routes.Route(backend.WithTrace(ctx, &trace), a.req.User)
	if err != nil {
		// A rule that cannot tell now: never a wrong password, and never
		// the next rule's backend.
		return target{}, Verdict{Outcome: OutcomeTemporary, Reason: ReasonRoutingFailed, Rule: r.Rule, Cause: err}, false
	}
	if r.Backend == nil {
		// Answered exactly like a wrong password, so that nobody can learn
		// which users exist, and counted like one.
		return target{}, h.failed(ctx, a, Verdict{Reason: ReasonNoBackend}), false
	}
	t := target{backend: r.Backend, rule: r.Rule, proto: h.checkProtocol(a.req.Protocol)}
	if len(trace.Stale) > 0 {
		t.stale = trace.Stale[0].Directory
	}
	if v, drained := h.divert(&t); drained {
		return t, v, false
	}
	v := Verdict{Outcome: OutcomeTemporary, Backend: t.backend.Name, Rule: t.rule, Stale: t.stale, Drained: t.drained}
	var ok bool
	if _, served := t.backend.Proxy[a.req.Protocol]; !served {
		v.Reason = ReasonNotServed
		return t, v, false
	}
	if t.check, ok = t.backend.Check[t.proto]; !ok {
		v.Reason, v.Cause = ReasonNoCheckAddress, fmt.Errorf("no %s address", t.proto)
		return t, v, false
	}
	if h.Health != nil {
		admitted, trial, degraded := h.Health.Admit(ctx, t.backend.Name, t.check, a.req.Protocol, t.proto)
		if !admitted {
			// Known down, or degraded, and a trial is already finding
			// out: answer now rather than after a timeout, and never from
			// the cache, since nginx could not reach the backend anyway.
			h.Health.Recheck()
			v.Reason = ReasonBackendDown
			if degraded {
				v.Reason = ReasonBackendDegraded
			}
			return t, v, false
		}
		t.trial = trial
	}
	if err := imapcheck.Carries(t.proto, a.req.User, a.req.Password); err != nil {
		// Such a password cannot be typed through nginx's line-based
		// protocols either; it is the client's input, not the backend's
		// fault, so it is answered like a wrong password and counted.
		v.Reason, v.Cause = ReasonUncarriable, err
		return t, h.failed(ctx, a, v), false
	}
	return t, Verdict{}, true
}

// checkProtocol is the protocol a login over proto is verified with.
func (h *Handler) checkProtocol(proto imapcheck.Protocol) imapcheck.Protocol {
	switch proto {
	case imapcheck.POP3:
		return imapcheck.POP3
	case imapcheck.SMTP:
		if h.SMTPVerify != "" {
			return h.SMTPVerify
		}
	}
	return imapcheck.IMAP
}

// conclude turns a check's result into the verdict, and teaches the cache
// and the limits what it means.
func (h *Handler) conclude(ctx context.Context, a *attempt, t target, res checkResult) Verdict {
	if res.refused != 0 {
		v := h.throttled(res.refused)
		v.Backend, v.Rule, v.Stale, v.Drained = t.backend.Name, t.rule, t.stale, t.drained
		return v
	}
	v := Verdict{Backend: t.backend.Name, Rule: t.rule, Stale: t.stale, Drained: t.drained, Cause: res.err, Cached: res.cached, Coalesced: res.coalesced}
	switch res.outcome {
	case imapcheck.OK:
		h.cache.store(t.cacheKey(a), a.sum)
		h.limiter.success(ctx, a)
		v.Outcome = OutcomeOK
		return h.sendTo(ctx, a.req, t.backend, v)
	case imapcheck.Rejected:
		h.cache.forget(t.cacheKey(a))
		v.Reason, v.Held = ReasonBackendRefused, res.took
		return h.failed(ctx, a, v)
	case imapcheck.Delayed:
		// An attempt whose answer the backend withheld (its penalty on
		// this client): it counts like a wrong password, or a guesser
		// whom the backend slows would never reach the limits.
		v.Outcome, v.Reason = OutcomeDelayed, ReasonDelayed
		v.Tried = h.limiter.failure(ctx, a)
		return v
	case imapcheck.Unsupported:
		// The backend offers no way to check this login (plaintext logins
		// disabled without TLS, say): the operator's to fix.
		v.Outcome, v.Reason = OutcomeUnsupported, ReasonCannotVerify
		return v
	}
	v.Outcome, v.Reason = OutcomeTemporary, ReasonUnavailable
	switch {
	case errors.Is(res.err, imapcheck.ErrUntrustedCertificate):
		v.Reason = ReasonUntrustedCert
	case errors.Is(res.err, errNoSlot):
		v.Reason = ReasonNoCheckSlot
	case errors.Is(res.err, imapcheck.ErrOversized):
		v.Reason = ReasonOversized
	case errors.Is(res.err, imapcheck.ErrStalled):
		v.Reason = ReasonStalled
	}
	return v
}

// failed refuses a login as a wrong password and counts it against the
// limits.
func (h *Handler) failed(ctx context.Context, a *attempt, v Verdict) Verdict {
	v.Outcome = OutcomeRejected
	v.Tried = h.limiter.failure(ctx, a)
	return v
}

// sendTo completes an OK verdict with b's address for the request's
// protocol. The host is resolved here because nginx accepts only a
// literal IP.
func (h *Handler) sendTo(ctx context.Context, req Request, b *backend.Backend, v Verdict) Verdict {
	v.Backend = b.Name
	ep, ok := b.Proxy[req.Protocol]
	if !ok {
		v.Outcome, v.Reason = OutcomeTemporary, ReasonNotServed
		return v
	}
	ip, err := h.Resolver.Resolve(ctx, ep.Host)
	if err != nil {
		v.Outcome, v.Reason, v.Cause = OutcomeTemporary, ReasonUnresolvable, err
		return v
	}
	v.Server, v.Port = ip, ep.Port
	return v
}
