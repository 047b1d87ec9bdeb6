package backend

import (
	"github.com/imapgate/imapgate/imapcheck"

	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
)

// Health probes every backend in the background and remembers which
// answer, so that a login for a backend known to be down gets a fast
// temporary failure instead of waiting for a timeout, and so that
// /readyz can tell an orchestrator the truth. Probes never run on a
// request's path.
//
// A probe connects to each address nginx proxies to and reads the
// greeting ("* OK" for IMAP, "+OK" for POP3, "220" for SMTP): a port that
// accepts but greets with BYE or an error is down too. Addresses the
// check uses on their own (implicit TLS ports) are probed by connecting.
type Health struct {
	// Backends are the backends to probe.
	Backends map[string]*Backend
	// Interval is the time between probe rounds; 0 means
	// DefaultProbeInterval.
	Interval time.Duration
	// Timeout bounds one probe; 0 means 3s.
	Timeout time.Duration
	// OnChange, when set, is called when a backend's address turns up or
	// down (and after its first probe), from the probing goroutine.
	OnChange func(backend string, proto imapcheck.Protocol, addr string, up bool, err error)
	// DegradeAfter is how many checks in a row, each for a different
	// client, that stall after the backend accepted their connection
	// (imapcheck.ErrStalled) mark it degraded; 0 means
	// DefaultDegradeAfter, negative never. Different clients, so that one
	// guesser slowed down by the backend's own penalty cannot degrade it
	// for everyone; any answered check ends the run.
	DegradeAfter int
	// OnDegraded, when set, is called when a backend turns degraded or
	// answers again; err is the last stall.
	OnDegraded func(backend string, degraded bool, err error)

	pokeOnce sync.Once
	poke     chan struct{} // asks Run for a round now; see Recheck

	mu       sync.Mutex
	state    map[healthKey]bool // absent: not probed yet
	checks   map[string]*checkState
	inTrials map[string]bool // a trial check runs on the backend
}

// DefaultDegradeAfter is Health.DegradeAfter when zero.
const DefaultDegradeAfter = 3

// checkState is what the checks on one backend have taught: the run of
// stalled checks, by client, and whether that made it degraded.
type checkState struct {
	stalledFor []netip.Addr // the clients of the stalls in a row
	degraded   bool
	lastStall  error
	lastTrial  time.Time // of a trial while degraded
}

// DefaultProbeInterval is the time between probe rounds when
// Health.Interval is zero.
const DefaultProbeInterval = 5 * time.Second

// minRecheck is the least time between two probe rounds that Recheck
// asks for, so that a burst of logins for a dead backend cannot turn
// into a burst of probes.
const minRecheck = 250 * time.Millisecond

func (h *Health) pokeChan() chan struct{} {
	h.pokeOnce.Do(func() { h.poke = make(chan struct{}, 1) })
	return h.poke
}

// Recheck asks Run for a probe round now rather than at the next tick,
// without waiting for it. The handler calls it when it refuses a login
// because a backend is down, so that a backend that has come back is seen
// within moments of the next login, not only after Interval.
func (h *Health) Recheck() {
	select {
	case h.pokeChan() <- struct{}{}:
	default: // a round is asked for already
	}
}

type healthKey struct {
	backend string
	proto   imapcheck.Protocol
	check   bool // the check's own address, not the one nginx uses
}

// Up reports whether the backend's addresses for proto answered their
// last probe. A backend not probed yet counts as up: better one slow
// check than refusing logins at start.
func (h *Health) Up(backend string, proto imapcheck.Protocol) bool {
	if h == nil {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, check := range []bool{false, true} {
		if up, ok := h.state[healthKey{backend, proto, check}]; ok && !up {
			return false
		}
	}
	return true
}

// Ready reports whether every address of every backend answered its last
// probe, and lists the ones that did not (or were not probed yet).
func (h *Health) Ready() (bool, []string) { return h.ReadyExcept(nil) }

// ReadyExcept is Ready for the backends skip does not name (nil skips
// none): a backend the operator drained for maintenance may be down
// without the imapgate being unready.
func (h *Health) ReadyExcept(skip func(backend string) bool) (bool, []string) {
	var missing []string
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.targets() {
		if skip != nil && skip(t.key.backend) {
			continue
		}
		up, ok := h.state[t.key]
		switch {
		case !ok:
			missing = append(missing, t.describe()+" not probed yet")
		case !up:
			missing = append(missing, t.describe()+" down")
		}
	}
	for name, cs := range h.checks {
		if cs.degraded && (skip == nil || !skip(name)) {
			missing = append(missing, fmt.Sprintf("%s degraded (greets, but %d logins in a row stalled)", name, len(cs.stalledFor)))
		}
	}
	sort.Strings(missing)
	return len(missing) == 0, missing
}

// probeTarget is one address to probe.
type probeTarget struct {
	key  healthKey
	addr Endpoint
}

func (t probeTarget) describe() string {
	return fmt.Sprintf("%s %s %s", t.key.backend, t.key.proto, t.addr)
}

// targets lists what to probe: each address nginx is sent to, and each
// check address that differs from it.
func (h *Health) targets() []probeTarget {
	var ts []probeTarget
	for name, b := range h.Backends {
		for proto, ep := range b.Proxy {
			ts = append(ts, probeTarget{healthKey{name, proto, false}, ep})
		}
		for proto, ep := range b.Check {
			if ep != b.Proxy[proto] {
				ts = append(ts, probeTarget{healthKey{name, proto, true}, ep})
			}
		}
	}
	return ts
}

// Run probes every Interval until ctx ends. It probes once at once, so
// that readiness is known as soon as possible.
func (h *Health) Run(ctx context.Context) {
	t := time.NewTicker(h.interval())
	defer t.Stop()
	poke := h.pokeChan()
	for {
		last := time.Now()
		h.ProbeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-poke:
			wait := time.NewTimer(minRecheck - time.Since(last))
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
			}
		}
	}
}

func (h *Health) interval() time.Duration {
	if h.Interval <= 0 {
		return DefaultProbeInterval
	}
	return h.Interval
}

// ProbeAll probes every address once, concurrently, and returns when all
// probes are done.
func (h *Health) ProbeAll(ctx context.Context) {
	targets := h.targets()
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() {
			err := h.probe(ctx, t)
			if ctx.Err() != nil {
				return // stopping: the result says nothing about the backend
			}
			h.record(t, err)
		})
	}
	wg.Wait()
}

func (h *Health) record(t probeTarget, err error) {
	up := err == nil
	h.mu.Lock()
	if h.state == nil {
		h.state = make(map[healthKey]bool)
	}
	was, known := h.state[t.key]
	h.state[t.key] = up
	h.mu.Unlock()
	if (!known || was != up) && h.OnChange != nil {
		h.OnChange(t.key.backend, t.key.proto, t.addr.String(), up, err)
	}
}

// probe connects to t and, for an address nginx uses, reads the greeting.
func (h *Health) probe(ctx context.Context, t probeTarget) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.addr.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if t.key.check {
		return nil
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	return imapcheck.ReadGreeting(conn, t.key.proto)
}

// Admit says whether a check on backend, connecting to check, may run
// now, for a login over protos (the client's protocol and the check's).
// It may when the backend's addresses for protos answered their last
// probe and the backend is not degraded. When some are down, one login at
// a time may find out whether the backend has come back, so that it is
// used at once, not at the next probe: addresses the check cannot try
// itself (nginx's, when the check logs in elsewhere) are probed again
// first, within ctx and the probe Timeout, and when only check is still
// down the check runs anyway as a trial (trial true; the caller calls
// EndTrial when it is done). A degraded backend gets one trial per probe
// Interval, since a trial there costs a stall. Otherwise ok is false, and
// degraded says whether that is why.
func (h *Health) Admit(ctx context.Context, backend string, check Endpoint, protos ...imapcheck.Protocol) (ok, trial, degraded bool) {
	if h == nil {
		return true, false, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	down, others := h.downTargets(backend, check, protos)
	cs := h.checks[backend]
	degraded = cs != nil && cs.degraded
	switch {
	case !down && !degraded:
		return true, false, false
	case h.inTrials[backend]:
		return false, false, degraded
	case degraded && time.Since(cs.lastTrial) < h.interval():
		return false, false, true
	case degraded:
		cs.lastTrial = time.Now()
	}
	if h.inTrials == nil {
		h.inTrials = make(map[string]bool)
	}
	h.inTrials[backend] = true
	if len(others) > 0 && !h.reprobe(ctx, others) {
		delete(h.inTrials, backend)
		return false, false, degraded
	}
	return true, true, degraded
}

// downTargets says whether any of backend's addresses for protos is down,
// and lists those down that are not check (which a check tries itself).
// h.mu must be held.
func (h *Health) downTargets(backend string, check Endpoint, protos []imapcheck.Protocol) (down bool, others []probeTarget) {
	// Only this backend's addresses: this runs on every login, cached
	// ones included, and must not walk every backend.
	b := h.Backends[backend]
	if b == nil {
		return false, nil
	}
	visit := func(t probeTarget) {
		if up, known := h.state[t.key]; known && !up {
			down = true
			if t.addr != check {
				others = append(others, t)
			}
		}
	}
	for _, proto := range protos {
		ep, proxied := b.Proxy[proto]
		if proxied {
			visit(probeTarget{healthKey{backend, proto, false}, ep})
		}
		if c, ok := b.Check[proto]; ok && (!proxied || c != ep) {
			visit(probeTarget{healthKey{backend, proto, true}, c})
		}
	}
	return down, others
}

// reprobe probes ts now, with h.mu released meanwhile, records the
// results and reports whether all answered. h.mu must be held; the
// caller holds the backend's trial, so one login at a time does this.
func (h *Health) reprobe(ctx context.Context, ts []probeTarget) bool {
	h.mu.Unlock()
	defer h.mu.Lock()
	all := true
	for _, t := range ts {
		err := h.probe(ctx, t)
		h.record(t, err)
		all = all && err == nil
	}
	return all
}

// EndTrial ends the trial Admit allowed on backend.
func (h *Health) EndTrial(backend string) {
	h.mu.Lock()
	delete(h.inTrials, backend)
	h.mu.Unlock()
}

// Observe learns from a check that ran on backend, connecting to check
// for client: a check the server answered (OK, Rejected, Unsupported)
// marks check's address up and ends a degraded spell; one that stalled
// after the server accepted it (imapcheck.ErrStalled) counts towards
// degraded.
func (h *Health) Observe(backend string, check Endpoint, client netip.Addr, outcome imapcheck.Outcome, err error) {
	if h == nil {
		return
	}
	switch {
	case outcome == imapcheck.OK, outcome == imapcheck.Rejected, outcome == imapcheck.Unsupported:
		h.answered(backend, check)
	case errors.Is(err, imapcheck.ErrStalled):
		h.stalled(backend, client, err)
	}
}

// answered records a check the server answered.
func (h *Health) answered(backend string, check Endpoint) {
	var cameBack []probeTarget
	h.mu.Lock()
	for _, t := range h.targets() {
		if t.key.backend == backend && t.addr == check {
			if up, known := h.state[t.key]; known && !up {
				cameBack = append(cameBack, t)
			}
		}
	}
	cs := h.checks[backend]
	recovered := cs != nil && cs.degraded
	if cs != nil {
		cs.stalledFor, cs.degraded, cs.lastStall = cs.stalledFor[:0], false, nil
	}
	h.mu.Unlock()
	for _, t := range cameBack {
		h.record(t, nil)
	}
	if recovered && h.OnDegraded != nil {
		h.OnDegraded(backend, false, nil)
	}
}

// stalled records a check that stalled, for client.
func (h *Health) stalled(backend string, client netip.Addr, err error) {
	after := h.DegradeAfter
	if after == 0 {
		after = DefaultDegradeAfter
	}
	if after < 0 {
		return
	}
	h.mu.Lock()
	if h.checks == nil {
		h.checks = make(map[string]*checkState)
	}
	cs := h.checks[backend]
	if cs == nil {
		cs = &checkState{}
		h.checks[backend] = cs
	}
	cs.lastStall = err
	if !slices.Contains(cs.stalledFor, client) && len(cs.stalledFor) < after {
		cs.stalledFor = append(cs.stalledFor, client)
	}
	turned := !cs.degraded && len(cs.stalledFor) >= after
	if turned {
		// The stall that degraded it counts as its trial: the next one
		// is a probe Interval away.
		cs.degraded, cs.lastTrial = true, time.Now()
	}
	h.mu.Unlock()
	if turned && h.OnDegraded != nil {
		h.OnDegraded(backend, true, err)
	}
}

// Degraded reports whether backend is degraded.
func (h *Health) Degraded(backend string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.checks[backend]
	return cs != nil && cs.degraded
}
