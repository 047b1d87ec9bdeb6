//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// A binary built with -tags pprof serves Go's profiles under /debug/pprof/
// on the operations listener (IMAPGATE_METRICS_LISTEN), for measuring
// (make bench's profiles); release builds have no such endpoint. Its heap
// profile samples every 4 KiB allocated rather than every 512 KiB, so
// that the few KiB each waiting request holds show up.
func init() {
	runtime.MemProfileRate = 4096
	debugHandlers = func(mux *http.ServeMux) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
}
