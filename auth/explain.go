package auth

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// ExplainRequest is a login to explain: who, from where, over what.
type ExplainRequest struct {
	User     string
	Client   netip.Addr
	Protocol imapcheck.Protocol
}

// Explanation is what a login would meet at each stage of the pipeline,
// found without changing anything: no count, no cache entry, no check. It
// never holds anything derived from a password.
type Explanation struct {
	User     string `json:"user"`
	Client   string `json:"client"`
	Network  string `json:"network"`
	Protocol string `json:"protocol"`
	// Verdict says, in a line, what the login would get and why.
	Verdict string `json:"verdict"`
	// Limited is false when no limit applies (none configured, or a
	// trusted network); Limit names the count that would refuse the login
	// (pair, user or network), LimitReason why.
	Limited     bool   `json:"limited"`
	Limit       string `json:"limit,omitempty"`
	LimitReason string `json:"limit_reason,omitempty"`
	// Owner says the user logged in from this network: the user and
	// network locks spare it.
	Owner bool `json:"owner"`
	// Records are the counts this login is held to, and the owner mark.
	Records []state.Record `json:"records"`
	// Held is the operator's hold on the user.
	Held *state.Hold `json:"held,omitempty"`
	// Rule and Backend are the routing rule that names the user's backend
	// and the backend; RouteError why no rule can tell now.
	Rule       string `json:"rule,omitempty"`
	Backend    string `json:"backend,omitempty"`
	RouteError string `json:"route_error,omitempty"`
	// Drained is the operator's drain of that backend; DivertedTo the
	// backend that takes its logins instead.
	Drained    *state.Drain `json:"drained,omitempty"`
	DivertedTo string       `json:"diverted_to,omitempty"`
	// Health is the checked backend's state by its probes: up, down or
	// degraded (unknown without probes).
	Health string `json:"health,omitempty"`
	// Cached lists the user's verified logins the cache remembers.
	Cached []CachedLogin `json:"cached"`
}

// healthView is what Explain asks of Health beyond the login's needs;
// *backend.Health has it.
type healthView interface {
	Up(backend string, proto imapcheck.Protocol) bool
	Degraded(backend string) bool
}

// Explain finds what a login of req would meet, stage by stage in the
// order a login meets them, and changes nothing.
func (h *Handler) Explain(ctx context.Context, req ExplainRequest) Explanation {
	h.once.Do(h.init)
	a := &attempt{req: Request{User: req.User, ClientIP: req.Client, Protocol: req.Protocol},
		limitUser: limitUser(h.fp, req.User), network: state.NetworkOf(req.Client)}
	x := Explanation{User: req.User, Client: clientString(req.Client), Network: a.network.String(),
		Protocol: string(req.Protocol), Records: []state.Record{}}
	verdicts := []string{h.explainLimits(ctx, a, &x), h.explainHold(a, &x), h.explainRoute(ctx, a, &x)}
	x.Cached = h.cache.lookupUser(req.User, h.cacheBackends(x.Backend, x.DivertedTo))
	if x.Cached == nil {
		x.Cached = []CachedLogin{}
	}
	for _, v := range verdicts {
		if v != "" {
			x.Verdict = v
			return x
		}
	}
	checked := x.Backend
	if x.DivertedTo != "" {
		checked = x.DivertedTo + ", drained " + x.Backend + "'s alternate"
	}
	x.Verdict = fmt.Sprintf("checked on %s (%s)", checked, x.Health)
	if len(x.Cached) > 0 {
		x.Verdict += "; answered from the cache if the password is the one last verified"
	}
	return x
}

// explainLimits fills in the limits' part and returns the verdict when
// they would refuse the login.
func (h *Handler) explainLimits(ctx context.Context, a *attempt, x *Explanation) string {
	if !h.limiter.applies(a) {
		return ""
	}
	x.Limited = true
	recs, _ := h.limiter.store.Records(ctx)
	ks := map[state.Kind]state.Record{state.Pair: {User: a.limitUser, Network: a.network},
		state.User: {User: a.limitUser}, state.Network: {Network: a.network}, state.Owner: {User: a.limitUser, Network: a.network}}
	for _, r := range recs {
		if want, ok := ks[r.Kind]; ok && want.User == r.User && want.Network == r.Network {
			x.Records = append(x.Records, r)
			x.Owner = x.Owner || r.Kind == state.Owner
		}
	}
	// A shared store lists them in no order.
	slices.SortFunc(x.Records, func(a, b state.Record) int { return cmp.Compare(a.Kind, b.Kind) })
	k := h.limiter.blocked(ctx, a)
	if k == 0 {
		return ""
	}
	x.Limit, x.LimitReason = limitNames[k], string(limitReasons[k])
	return fmt.Sprintf("throttled by the %s limit: %s (the password is not checked)", x.Limit, x.LimitReason)
}

// explainHold fills in the operator's hold on the user.
func (h *Handler) explainHold(a *attempt, x *Explanation) string {
	v, held := h.hold(a)
	if !held {
		return ""
	}
	hd, _ := h.Controls.Held(a.limitUser)
	x.Held = &hd
	return fmt.Sprintf("held by the operator: nginx waits %d s and asks again", v.Wait)
}

// explainRoute fills in the route, the drain and the backend's health,
// and returns the verdict when one of them ends the login.
func (h *Handler) explainRoute(ctx context.Context, a *attempt, x *Explanation) string {
	r, err := h.Routes.Route(ctx, a.req.User)
	x.Rule = r.Rule
	switch {
	case err != nil:
		x.RouteError = err.Error()
		return "temporary: " + string(ReasonRoutingFailed)
	case r.Backend == nil:
		return "rejected: " + string(ReasonNoBackend) + " (answered as a wrong password)"
	}
	x.Backend = r.Backend.Name
	t := target{backend: r.Backend, rule: r.Rule, proto: h.checkProtocol(a.req.Protocol)}
	if h.Controls != nil {
		if d, ok := h.Controls.Drained(x.Backend); ok {
			x.Drained = &d
		}
	}
	if v, drained := h.divert(&t); drained {
		return "temporary: " + string(v.Reason)
	}
	if t.drained != "" {
		x.DivertedTo = t.backend.Name
	}
	x.Health = h.explainHealth(t.backend, a.req.Protocol)
	if x.Health == "down" || x.Health == "degraded" {
		return fmt.Sprintf("temporary: backend %s %s (a login at a time may try it)", t.backend.Name, x.Health)
	}
	return ""
}

// explainHealth is b's state by its probes.
func (h *Handler) explainHealth(b *backend.Backend, proto imapcheck.Protocol) string {
	hv, ok := h.Health.(healthView)
	switch {
	case !ok:
		return "unknown"
	case hv.Degraded(b.Name):
		return "degraded"
	case !hv.Up(b.Name, proto):
		return "down"
	}
	return "up"
}

// Flush forgets every verified login of user the cache remembers (after
// a password change: the next login is checked on the backend), and
// returns how many it forgot.
func (h *Handler) Flush(user string) int {
	h.once.Do(h.init)
	// The route finds a backend a directory names that is not configured;
	// its lookup is bounded like a login's, since a flush also comes from
	// other replicas' announcements, with no request to bound it.
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(h.Timeout, flushRouteTimeout))
	defer cancel()
	routed := ""
	if r, err := h.Routes.Route(ctx, user); err == nil && r.Backend != nil {
		routed = r.Backend.Name
	}
	return h.cache.forgetUser(user, h.cacheBackends(routed))
}

// flushRouteTimeout bounds Flush's route lookup when Timeout is not set.
const flushRouteTimeout = 10 * time.Second

// cacheBackends names the backends a user's cache entries can be for:
// every configured backend, and also, since a directory may name a host
// that is not one of them, the ones given.
func (h *Handler) cacheBackends(also ...string) []string {
	names := make([]string, 0, len(h.Backends)+len(also))
	for name := range h.Backends {
		names = append(names, name)
	}
	for _, name := range also {
		if name != "" && h.Backends[name] == nil {
			names = append(names, name)
		}
	}
	return names
}
