package auth

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are imapgate's Prometheus series. A nil *Metrics records
// nothing. Labels carry protocol, outcome and backend names only: never a
// user, an address or anything else without bounds, and never a password.
type Metrics struct {
	requests      *prometheus.CounterVec
	checkDuration *prometheus.HistogramVec
	cache         *prometheus.CounterVec
	coalesced     prometheus.Counter
	throttled     *prometheus.CounterVec
	inFlight      prometheus.Gauge
	backendUp     *prometheus.GaugeVec
	directoryUp   *prometheus.GaugeVec
	degraded      *prometheus.GaugeVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imapgate_requests_total",
			Help: "auth_http requests answered, by mail protocol and outcome.",
		}, []string{"protocol", "outcome"}),
		checkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imapgate_backend_login_duration_seconds",
			Help: "Time of one verification login on a backend, by backend, check protocol and outcome.",
			// A good login takes about 10 ms on Dovecot, a refused one
			// 0.5 s or more (its failure delay), a dead one the timeout.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"backend", "protocol", "outcome"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imapgate_cache_lookups_total",
			Help: "Verified-login cache lookups, by result (hit or miss).",
		}, []string{"result"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imapgate_checks_coalesced_total",
			Help: "Requests answered by a backend login another request made at the same moment.",
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imapgate_throttled_total",
			Help: "Logins refused by the guessing limits without asking the backend, by the limit that applied.",
		}, []string{"limit"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imapgate_checks_in_flight",
			Help: "Backend verification logins in progress.",
		}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imapgate_backend_up",
			Help: "1 when the backend's address for the protocol answered its last probe, else 0.",
		}, []string{"backend", "protocol"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imapgate_backend_degraded",
			Help: "1 while the backend greets but its logins stall (checks fail fast but for one trial at a time), else 0.",
		}, []string{"backend"}),
	}
	m.directoryUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imapgate_directory_up",
		Help: "1 when the routing directory (sql, ldap) answered its last lookup or probe, else 0.",
	}, []string{"directory"})
	reg.MustRegister(m.requests, m.checkDuration, m.cache, m.coalesced, m.throttled, m.inFlight, m.backendUp, m.directoryUp, m.degraded)
	// Every cache result exists from the start, so rate() works at once.
	m.cache.WithLabelValues("hit")
	m.cache.WithLabelValues("miss")
	return m
}

// BackendUp records the result of a backend probe.
func (m *Metrics) BackendUp(backend, protocol string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.backendUp.WithLabelValues(backend, protocol).Set(v)
}

// BackendDegraded records that a backend turned degraded, or answers
// again.
func (m *Metrics) BackendDegraded(backend string, degraded bool) {
	if m == nil {
		return
	}
	v := 0.0
	if degraded {
		v = 1
	}
	m.degraded.WithLabelValues(backend).Set(v)
}

// request counts an answered request by its protocol and verdict.
// DirectoryUp records a routing directory's state.
func (m *Metrics) DirectoryUp(directory string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.directoryUp.WithLabelValues(directory).Set(v)
}

func (m *Metrics) request(protocol string, v Verdict) {
	if m != nil {
		m.requests.WithLabelValues(protocol, v.Outcome.String()).Inc()
	}
}

func (m *Metrics) cacheLookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cache.WithLabelValues("hit").Inc()
	} else {
		m.cache.WithLabelValues("miss").Inc()
	}
}

func (m *Metrics) coalescedCheck() {
	if m != nil {
		m.coalesced.Inc()
	}
}

func (m *Metrics) throttle(limit string) {
	if m != nil {
		m.throttled.WithLabelValues(limit).Inc()
	}
}

// checkStarted counts a backend login in flight; the returned function
// ends it and records its duration.
func (m *Metrics) checkStarted(backend, protocol string) func(outcome string) {
	if m == nil {
		return func(string) {}
	}
	start := time.Now()
	m.inFlight.Inc()
	return func(outcome string) {
		m.inFlight.Dec()
		m.checkDuration.WithLabelValues(backend, protocol, outcome).Observe(time.Since(start).Seconds())
	}
}
