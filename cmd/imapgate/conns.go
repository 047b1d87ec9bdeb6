package main

import (
	"context"
	"net"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/http1"
)

// maxDerivedConns bounds the connection cap derived from the file
// descriptor limit: a container's limit of a million would otherwise let
// a crowd of slow clients hold gigabytes (a connection waiting for its
// head costs about 11 KiB: a goroutine's stack, the read buffer, the
// conn). A busy site has a few hundred auth_http requests in flight, and
// at the cap the slowest client makes room for a prompt one, so the bound
// costs nginx nothing.
const maxDerivedConns = 4096

// fdReserve is how many file descriptors imapgate keeps for its own
// connections when it derives the cap on client connections: every check
// slot of every backend, its probes and a trial (up to 8 a backend), and
// a fixed 128 for listeners, the operations endpoints, the users file,
// name lookups and the standard streams.
func fdReserve(backends, maxChecks int) int {
	if maxChecks <= 0 {
		maxChecks = 256 // no bound on checks: assume a generous one
	}
	return backends*(maxChecks+8) + 128
}

// fdLimit returns the process's limit on open files (RLIMIT_NOFILE;
// Go raises the soft limit to the hard one at start).
func fdLimit() (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur > 1<<30 {
		return 1 << 30, nil
	}
	return int(lim.Cur), nil
}

// checkMaxConns derives IMAPGATE_MAX_CONNS when it is 0 and refuses one
// that would leave no room for backend dials and probes.
func checkMaxConns(c config, s *settings) error {
	if c.MaxConns < 0 {
		return settingError("MAX_CONNS", "must not be negative (0 = derived from the file descriptor limit)")
	}
	limit, err := fdLimit()
	if err != nil {
		return settingError("MAX_CONNS", "cannot read the file descriptor limit: %v", err)
	}
	room := limit - fdReserve(len(s.backends), c.MaxChecks)
	switch {
	case room < 16:
		return settingError("MAX_CONNS", "the file descriptor limit (%d, ulimit -n) leaves no room for client connections next to %d backends' checks and probes: raise it", limit, len(s.backends))
	case c.MaxConns == 0:
		s.maxConns = min(room, maxDerivedConns)
	case c.MaxConns > room:
		return settingError("MAX_CONNS", "%d leaves no room for backend dials and probes under the file descriptor limit %d (ulimit -n): at most %d", c.MaxConns, limit, room)
	default:
		s.maxConns = c.MaxConns
	}
	return nil
}

// connMetrics are the auth listener's connection series.
type connMetrics struct {
	dropped *prometheus.CounterVec
}

// newConnMetrics registers the series of srv's connections.
func newConnMetrics(reg prometheus.Registerer, srv *http1.Server, limit int) *connMetrics {
	m := &connMetrics{dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imapgate_connections_dropped_total",
		Help: "auth_http connections imapgate ended on its own, by reason: refused (peer not in IMAPGATE_ALLOW_FROM), slow (no request head in time), evicted (cut off at IMAPGATE_MAX_CONNS for a new one), full (at the cap with every connection busy).",
	}, []string{"reason"})}
	for _, r := range []http1.DropReason{http1.DropRefused, http1.DropSlow, http1.DropEvicted, http1.DropFull} {
		m.dropped.WithLabelValues(r.String())
	}
	max := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imapgate_connections_max",
		Help: "The cap on auth_http connections (IMAPGATE_MAX_CONNS, or derived from the file descriptor limit).",
	})
	max.Set(float64(limit))
	reg.MustRegister(m.dropped, max, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imapgate_connections_open",
		Help: "auth_http connections open now.",
	}, func() float64 { return float64(srv.Open()) }))
	return m
}

// drop counts a dropped connection.
func (m *connMetrics) drop(r http1.DropReason) { m.dropped.WithLabelValues(r.String()).Inc() }

// acceptFrom is the accept filter for IMAPGATE_ALLOW_FROM: nil, accepting
// every peer, when the list is empty. A unix socket's peers are whoever
// its file permissions let in.
func acceptFrom(s *settings) func(net.Addr) bool {
	if len(s.AllowFrom) == 0 {
		return nil
	}
	nets := s.AllowFrom
	return func(remote net.Addr) bool { return remote.Network() == "unix" || auth.PeerIn(nets, remote) }
}

// A crowd is at least crowdSize connections at once; it has gone when at
// most an eighth of its peak is left, and its memory is released once it
// has been gone for crowdGone: the server's idle workers keep their
// stacks for 10 s after their last connection. crowdCheck is how often
// the count is looked at.
const (
	crowdSize  = 1024
	crowdGone  = 15 * time.Second
	crowdCheck = 5 * time.Second
)

// releaseAfterCrowd hands the memory a crowd of connections took (their
// goroutines' stacks and read buffers, some 20 KiB each with the garbage
// collector's headroom) back to the system once the crowd has gone, until
// ctx ends. Left to itself the Go runtime returns it only after its next
// forced collection, minutes later, and a flood of slow clients would
// leave imapgate holding a hundred MiB it no longer uses. It looks every
// so often, and releases once the crowd has been gone for gone.
func releaseAfterCrowd(ctx context.Context, open func() int, every, gone time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	peak := 0
	var goneSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := open()
		peak = max(peak, n)
		switch {
		case peak < crowdSize || n > peak/8:
			goneSince = time.Time{}
		case goneSince.IsZero():
			goneSince = time.Now()
		case time.Since(goneSince) >= gone:
			debug.FreeOSMemory()
			peak, goneSince = n, time.Time{}
		}
	}
}
