package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// service is everything main wires together from the settings.
type service struct {
	cfg    config
	logger *slog.Logger
	// maxConns and acceptFrom bound the auth listener's connections.
	maxConns   int
	acceptFrom func(net.Addr) bool
	handler    *auth.Handler
	usersFile  *backend.UsersFile // nil without IMAPGATE_USERS_FILE
	health     *backend.Health
	registry   *prometheus.Registry
	// logFlusher, when set, runs beside the server and flushes the log
	// buffer until its context ends.
	logFlusher func(context.Context)
}

// newService builds the service from checked settings; nothing here can
// fail.
func newService(s *settings) *service {
	svc := &service{cfg: s.config, logger: s.logger, usersFile: s.usersFile, maxConns: s.maxConns, acceptFrom: acceptFrom(s)}
	svc.registry = prometheus.NewRegistry()
	svc.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := auth.NewMetrics(svc.registry)
	svc.health = newHealth(s, metrics)
	svc.handler = &auth.Handler{
		Routes: s.routes,
		Verifier: &imapcheck.Verifier{
			Security:  s.security,
			TLSConfig: s.tlsConfig,
			Timeout:   s.VerifyTimeout,
			// Dovecot's auth penalty is per source address: told the
			// client's, it slows the guesser, not every user.
			ForwardClientIP: s.ForwardClientIP,
		},
		Resolver:     &backend.Resolver{},
		SMTPVerify:   s.smtpVerify,
		SMTPRelay:    s.relay,
		SharedSecret: s.SharedSecret,
		AllowFrom:    s.AllowFrom,
		MaxChecks:    s.MaxChecks,
		CacheTTL:     s.CacheTTL,
		CacheSize:    s.CacheSize,
		Limits:       &s.limits,
		Metrics:      metrics,
		Health:       svc.health,
		// The check has VerifyTimeout; resolving the backend's name for
		// nginx gets a little more.
		Timeout: s.VerifyTimeout + 2*time.Second,
		// A login that tries a backend marked down gets as long as a
		// probe: it is one, with a login after the greeting.
		TrialTimeout: probeTimeout(s),
		Logger:       s.logger,
	}
	return svc
}

// newHealth builds the background probes of every backend, which log and
// count each change of state.
func newHealth(s *settings, metrics *auth.Metrics) *backend.Health {
	logger := s.logger
	degradeAfter := s.DegradeAfter
	if degradeAfter == 0 {
		degradeAfter = -1 // never
	}
	return &backend.Health{
		Backends:     s.backends,
		Interval:     s.ProbeInterval,
		Timeout:      probeTimeout(s),
		DegradeAfter: degradeAfter,
		OnDegraded: func(name string, degraded bool, err error) {
			metrics.BackendDegraded(name, degraded)
			if degraded {
				logger.Warn("backend degraded: it greets, but logins stall; failing its checks fast but for one trial at a time", "backend", name, "err", err)
			} else {
				logger.Info("backend answers logins again", "backend", name)
			}
		},
		OnChange: func(name string, proto imapcheck.Protocol, addr string, up bool, err error) {
			metrics.BackendUp(name, string(proto), up)
			if up {
				logger.Info("backend up", "backend", name, "protocol", string(proto), "addr", addr)
			} else {
				logger.Warn("backend down", "backend", name, "protocol", string(proto), "addr", addr, "err", err)
			}
		},
	}
}

// probeTimeout bounds a probe, and a trial login on a backend marked
// down: a probe is a connect and a greeting, and if that takes longer
// than a login may, the backend is as good as down.
func probeTimeout(s *settings) time.Duration {
	return min(s.VerifyTimeout, 3*time.Second)
}
