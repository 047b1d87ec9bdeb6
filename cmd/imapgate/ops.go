package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imapgate/imapgate/admin"
	"github.com/imapgate/imapgate/auth/state"
)

// The operations endpoints. Without IMAPGATE_METRICS_LISTEN they share
// the auth listener (auth.Server's FallbackPaths), and auth_http answers
// on every other path.
const (
	pathMetrics = "/metrics"
	pathHealthz = "/healthz"
	pathReadyz  = "/readyz"
)

// opsPaths are the operations endpoints' paths.
var opsPaths = []string{pathMetrics, pathHealthz, pathReadyz}

// debugHandlers, set in a build with -tags pprof, adds the profiling
// endpoints to the operations listener.
var debugHandlers func(mux *http.ServeMux)

// opsHandler serves /metrics, /healthz and /readyz.
func (s *service) opsHandler() http.Handler {
	mux := http.NewServeMux()
	if debugHandlers != nil {
		debugHandlers(mux)
	}
	mux.Handle(pathMetrics, promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc(pathHealthz, func(w http.ResponseWriter, r *http.Request) {
		// The process serves: that is all liveness means.
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(pathReadyz, func(w http.ResponseWriter, r *http.Request) {
		ready, missing := s.ready()
		// A store that cannot be reached leaves imapgate ready (it decides
		// on its own state), but says so; so do the operator's drains.
		notes := ""
		if s.state != nil && !s.state.Shared() {
			notes = " (degraded: state store unreachable, guessing limits kept in this process)"
		}
		notes += drainedNote(s.controls)
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s%s\n", strings.Join(missing, "; "), notes)
			return
		}
		fmt.Fprintf(w, "ready%s\n", notes)
	})
	if s.admin != nil && s.cfg.AdminListen == "" {
		// IMAPGATE_METRICS_LISTEN's listener (validate sees to it that it
		// has one of its own: never nginx's).
		mux.Handle(admin.PathPrefix, s.admin.Handler())
	}
	return mux
}

// drainedNote says which backends the operator drained, for /readyz.
func drainedNote(c state.Controls) string {
	if c == nil {
		return ""
	}
	var ds []string
	for _, d := range c.Drains() {
		to := "try later"
		if d.To != "" {
			to = "to " + d.To
		}
		ds = append(ds, fmt.Sprintf("%s (%s)", d.Backend, to))
	}
	if len(ds) == 0 {
		return ""
	}
	return " (drained by the operator: " + strings.Join(ds, ", ") + ")"
}

// ready reports whether every backend address answered its last probe
// and every routing directory is up, and lists what is not. A backend
// the operator drained does not count: it is out for maintenance.
func (s *service) ready() (bool, []string) {
	ready, missing := s.health.ReadyExcept(func(backend string) bool {
		if s.controls == nil {
			return false
		}
		_, drained := s.controls.Drained(backend)
		return drained
	})
	for _, d := range s.directories {
		if st := d.State(); !st.Up {
			ready = false
			missing = append(missing, fmt.Sprintf("directory %s down: %v", st.Name, st.Err))
		}
	}
	return ready, missing
}
