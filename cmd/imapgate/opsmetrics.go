package main

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imapgate/imapgate/auth/state"
)

// registerProcessMetrics registers the series that describe this process
// and its settings rather than its logins (those are auth.Metrics):
//
//   - imapgate_build_info{version,revision,goversion} 1
//   - imapgate_ready: 1 while /readyz answers 200, else 0, so that an alert
//     can follow readiness without probing /readyz itself
//   - imapgate_check_slots{backend}: IMAPGATE_MAX_CHECKS, the bound on one
//     backend's checks in flight (absent when 0, no bound), for comparing
//     with imapgate_checks_in_flight
//
// ready is called at every scrape.
func registerProcessMetrics(reg prometheus.Registerer, bi buildInfo, ready func() bool, backends []string, maxChecks int) {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imapgate_build_info",
		Help: "Always 1; the labels say which build of imapgate runs.",
	}, []string{"version", "revision", "goversion"})
	info.WithLabelValues(bi.Version, bi.Revision, bi.GoVersion).Set(1)

	readiness := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imapgate_ready",
		Help: "1 when every backend address answered its last probe (/readyz is 200), else 0.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	})

	slots := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "imapgate_check_slots",
		Help: "Checks one backend may have in flight at most (IMAPGATE_MAX_CHECKS); absent when unbounded.",
	}, []string{"backend"})
	if maxChecks > 0 {
		for _, b := range slices.Sorted(slices.Values(backends)) {
			slots.WithLabelValues(b).Set(float64(maxChecks))
		}
	}
	reg.MustRegister(info, readiness, slots)
}

// registerServiceMetrics is registerProcessMetrics for a wired service.
func (s *service) registerServiceMetrics() {
	names := make([]string, 0, len(s.health.Backends))
	for name := range s.health.Backends {
		names = append(names, name)
	}
	ready := func() bool { ok, _ := s.ready(); return ok }
	registerProcessMetrics(s.registry, readBuildInfo(), ready, names, s.cfg.MaxChecks)
	s.registry.MustRegister(drainedCollector{controls: s.controls, backends: slices.Sorted(slices.Values(names))})
}

// drainedDesc is imapgate_backend_drained{backend}: 1 while the operator
// has drained the backend (on any replica, with a shared store), else 0.
var drainedDesc = prometheus.NewDesc("imapgate_backend_drained",
	"1 while the operator has drained the backend (imapgate admin drain): its new logins try later or go to the alternate.",
	[]string{"backend"}, nil)

// drainedCollector reads the drains at every scrape: another replica may
// have changed them, and a gauge set here would not know.
type drainedCollector struct {
	controls state.Controls
	backends []string
}

// Describe implements prometheus.Collector.
func (c drainedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- drainedDesc }

// Collect implements prometheus.Collector.
func (c drainedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.backends {
		v := 0.0
		if _, drained := c.controls.Drained(b); drained {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(drainedDesc, prometheus.GaugeValue, v, b)
	}
}
