package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imapgate/imapgate/admin"
	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
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
	// directories are the routing directories (SQL, LDAP), probed in
	// the background and part of readiness.
	directories []*backend.Directory
	registry    *prometheus.Registry
	// store keeps the guessing limits' state (the admin endpoints list and
	// lift records through it); state is the same when it is shared
	// through IMAPGATE_STATE_URL, nil otherwise.
	store state.Store
	state *state.Redis
	// controls are the operator's drains and holds: state's when the
	// store is shared (every replica's), else this process's.
	controls state.Controls
	// admin is the operator's API; nil without IMAPGATE_ADMIN_TOKEN.
	admin *admin.Server
	// logFlusher, when set, runs beside the server and flushes the log
	// buffer until its context ends.
	logFlusher func(context.Context)
}

// newService builds the service from checked settings; nothing here can
// fail.
func newService(s *settings) *service {
	svc := &service{cfg: s.config, logger: s.logger, usersFile: s.usersFile, directories: s.directories,
		maxConns: s.maxConns, acceptFrom: acceptFrom(s)}
	svc.registry = prometheus.NewRegistry()
	svc.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := auth.NewMetrics(svc.registry)
	svc.health = newHealth(s, metrics)
	for _, d := range s.directories {
		d.OnChange = directoryChanged(s.logger, metrics)
	}
	// Before the handler: its State and Controls come from here.
	store := svc.newState(s)
	svc.handler = &auth.Handler{
		Routes: s.routes,
		Verifier: &imapcheck.Verifier{
			TLSConfig: s.tlsConfig,
			Timeout:   s.VerifyTimeout,
			// Dovecot's auth penalty is per source address: told the
			// client's, it slows the guesser, not every user.
			ForwardClientIP: s.ForwardClientIP,
			Debug:           transcripts(s),
		},
		Resolver:            &backend.Resolver{},
		SMTPVerify:          s.smtpVerify,
		SMTPRelay:           s.relay,
		SharedSecret:        s.SharedSecret,
		AllowFrom:           s.AllowFrom,
		MaxChecks:           s.MaxChecks,
		MaxChecksPerNetwork: s.MaxChecksPerNet,
		CacheTTL:            s.CacheTTL,
		CacheSize:           s.CacheSize,
		Limits:              &s.limits,
		State:               store,
		Metrics:             metrics,
		Health:              svc.health,
		// The check has VerifyTimeout; resolving the backend's name for
		// nginx gets a little more.
		Timeout: s.VerifyTimeout + 2*time.Second,
		// A login that tries a backend marked down gets as long as a
		// probe: it is one, with a login after the greeting.
		TrialTimeout: probeTimeout(s),
		Logger:       s.logger,
		Controls:     svc.controls,
		Backends:     s.backends,
	}
	if svc.state != nil {
		// Each replica's cache is its own: a flush made through any
		// replica's admin API reaches this one through the store.
		svc.state.OnFlush(func(user string) { svc.handler.Flush(user) })
	}
	svc.admin = svc.newAdmin(s)
	svc.registerServiceMetrics()
	return svc
}

// newAdmin builds the admin API on the handler's own state, or nil when
// no token turns it on.
func (svc *service) newAdmin(s *settings) *admin.Server {
	if s.adminTokens == nil {
		return nil
	}
	names := make([]string, 0, len(s.backends))
	for name := range s.backends {
		names = append(names, name)
	}
	slices.Sort(names)
	srv := &admin.Server{Tokens: s.adminTokens, Store: svc.store, Controls: svc.controls, Logins: svc.handler,
		Backends: names, Logger: s.logger}
	if svc.state != nil {
		srv.Replicas = svc.state
	}
	return srv
}

// directoryChanged logs and counts a routing directory turning up or
// down.
func directoryChanged(logger *slog.Logger, metrics *auth.Metrics) func(name string, up bool, err error) {
	return func(name string, up bool, err error) {
		metrics.DirectoryUp(name, up)
		if up {
			logger.Info("directory up", "directory", name)
		} else {
			logger.Warn("directory down", "directory", name, "err", err)
		}
	}
}

// newState connects the shared store of IMAPGATE_STATE_URL, which logs
// and counts each change between shared and local state; without it, the
// state is kept in the process.
func (svc *service) newState(s *settings) state.Store {
	svc.controls = &state.LocalControls{}
	if s.StateURL == "" {
		svc.store = state.NewMemory(s.limits.Limits)
		return svc.store
	}
	shared := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imapgate_state_shared",
		Help: "1 while the guessing limits are shared through IMAPGATE_STATE_URL, 0 while the store cannot be reached and they are kept in this process.",
	})
	fallbacks := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "imapgate_state_fallbacks_total",
		Help: "Times the shared store could not be reached and the guessing limits fell back to this process.",
	})
	svc.registry.MustRegister(shared, fallbacks)
	logger := s.logger
	st, err := state.NewRedis(state.RedisConfig{URL: s.StateURL, Limits: s.limits.Limits, Timeout: s.StateTimeout,
		OnChange: func(ok bool, err error) {
			if ok {
				shared.Set(1)
				logger.Info("state store reachable: guessing limits shared")
				return
			}
			shared.Set(0)
			fallbacks.Inc()
			logger.Warn("state store unreachable: guessing limits kept in this process until it answers", "err", err)
		}})
	if err != nil {
		// validate has parsed the URL already.
		logger.Error("state store: keeping the limits in this process", "err", err)
		svc.store = state.NewMemory(s.limits.Limits)
		return svc.store
	}
	svc.store, svc.state, svc.controls = st, st, st
	return st
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

// transcripts is where the checks' protocol transcripts go: with
// IMAPGATE_LOG_LEVEL=debug, one log line per check with its lines and
// their times (user names in them; passwords never); else nowhere.
func transcripts(s *settings) io.Writer {
	if s.LogLevel != "debug" {
		return nil
	}
	return transcriptLog{s.logger}
}

// transcriptLog writes each transcript it is given as a debug log line.
type transcriptLog struct{ logger *slog.Logger }

func (t transcriptLog) Write(p []byte) (int, error) {
	t.logger.Debug("check transcript", "transcript", string(p))
	return len(p), nil
}
