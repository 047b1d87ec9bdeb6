//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
)

// A binary built with -tags pprof serves Go's profiles under /debug/pprof/
// on the operations listener (IMAPGATE_METRICS_LISTEN), for measuring
// (make bench's profiles); release builds have no such endpoint.
func init() {
	debugHandlers = func(mux *http.ServeMux) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
}
