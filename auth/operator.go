package auth

import (
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
)

// The operator's standing instructions (state.Controls), applied to a
// login in one place each: a held user waits before anything else is
// asked (hold), and a drained backend's logins are answered "try later"
// or sent to the drain's alternate as soon as the route names it
// (divert), before its health or the cache is asked.

// hold answers a held user's login with nginx's WAIT: nginx sleeps the
// hold's wait and asks again, without counting an attempt, so the client
// gets in once the hold ends, in the same session.
func (h *Handler) hold(a *attempt) (Verdict, bool) {
	if h.Controls == nil {
		return Verdict{}, false
	}
	hd, ok := h.Controls.Held(a.limitUser)
	if !ok {
		return Verdict{}, false
	}
	return Verdict{Outcome: OutcomeHeld, Reason: ReasonHeld, Wait: max(hd.Wait, 1)}, true
}

// divert applies a drain of t's backend: t moves to the drain's
// alternate when it names one that is not drained itself; otherwise the
// login is answered "try later" (the temporary answer: the client keeps
// its password and retries).
func (h *Handler) divert(t *target) (Verdict, bool) {
	if h.Controls == nil {
		return Verdict{}, false
	}
	d, ok := h.Controls.Drained(t.backend.Name)
	if !ok {
		return Verdict{}, false
	}
	if alt := h.alternate(d); alt != nil {
		t.drained, t.backend = t.backend.Name, alt
		return Verdict{}, false
	}
	return Verdict{Outcome: OutcomeTemporary, Reason: ReasonDrained, Backend: t.backend.Name, Rule: t.rule, Stale: t.stale}, true
}

// alternate is the backend that takes a drained one's logins, or nil.
func (h *Handler) alternate(d state.Drain) *backend.Backend {
	if d.To == "" {
		return nil
	}
	alt := h.Backends[d.To]
	if alt == nil {
		return nil
	}
	if _, drained := h.Controls.Drained(alt.Name); drained {
		return nil
	}
	return alt
}
