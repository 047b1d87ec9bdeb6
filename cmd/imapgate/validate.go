package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// settings are the settings checked and parsed: what the service is
// built from (wire). Nothing in them still needs checking.
type settings struct {
	config
	logger     *slog.Logger
	security   imapcheck.Security
	backends   map[string]*backend.Backend
	usersFile  *backend.UsersFile // nil without IMAPGATE_USERS_FILE
	routes     backend.Chain
	relay      *backend.Backend
	smtpVerify imapcheck.Protocol
	tlsConfig  *tls.Config
	limits     auth.Limits
	maxConns   int // the cap on auth_http connections, derived if need be
}

// settingCheck checks one setting, or a few that only make sense
// together, and fills in what it parsed. It may rely on the checks
// before it, whose results are nil when they failed.
type settingCheck func(c config, s *settings) error

// settingChecks run in this order; every error is reported, so that an
// operator fixes all of them in one go.
var settingChecks = []settingCheck{
	checkPorts,
	checkVerifyTLS,
	checkBackends,
	checkUsersFile,
	checkFirstLetter,
	checkDefaultBackend,
	checkVerifyCAFile,
	checkVerifyTimeout,
	checkSMTP,
	positive("CACHE_SIZE", func(c config) int64 { return int64(c.CacheSize) }, ""),
	notNegative("CACHE_TTL", func(c config) int64 { return int64(c.CacheTTL) }, " (0 turns the cache off)"),
	notNegative("MAX_CHECKS", func(c config) int64 { return int64(c.MaxChecks) }, " (0 = no bound)"),
	checkMaxConns,
	notNegative("LIMIT_PAIR", func(c config) int64 { return int64(c.LimitPair) }, " (0 turns this limit off)"),
	notNegative("LIMIT_USER", func(c config) int64 { return int64(c.LimitUser) }, " (0 turns this limit off)"),
	notNegative("LIMIT_NETWORK", func(c config) int64 { return int64(c.LimitNetwork) }, " (0 turns this limit off)"),
	positive("LIMIT_WINDOW", func(c config) int64 { return int64(c.LimitWindow) }, ""),
	positive("PROBE_INTERVAL", func(c config) int64 { return int64(c.ProbeInterval) }, ""),
	notNegative("DEGRADE_AFTER", func(c config) int64 { return int64(c.DegradeAfter) }, " (0 = never)"),
	checkHTTPServer,
}

// loadSettings reads every setting through lookuper and checks it: the
// first of the two steps of a start (the second is newService). The error
// names every bad setting, in a fixed order.
func loadSettings(ctx context.Context, lookuper envconfig.Lookuper, logOut io.Writer) (*settings, error) {
	cfg, readErr := readConfig(ctx, lookuper)
	s, err := validate(cfg, logOut)
	if readErr != nil {
		// The settings that did not decode kept their defaults, so the
		// checks of the others still say something.
		var errs []error
		if err != nil {
			errs = append(errs, unjoin(err)...)
		}
		return nil, sortedErrors(append(unjoin(readErr), errs...))
	}
	return s, err
}

// unjoin returns the errors errors.Join joined into err.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// validate checks every setting of c; the error joins all that are bad,
// in a fixed order. logOut receives the log of the service built from the
// result; nil discards it (a check of the configuration, not a start).
func validate(c config, logOut io.Writer) (*settings, error) {
	s := &settings{config: c}
	if logOut == nil {
		logOut = io.Discard
	}
	// First, since the users file logs its reloads to it.
	logger, err := newLogger(c, logOut)
	var errs []error
	if err != nil {
		errs = append(errs, err)
		logger = slog.New(slog.DiscardHandler)
	}
	s.logger = logger
	for _, check := range settingChecks {
		if err := check(c, s); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sortedErrors(errs); err != nil {
		return nil, err
	}
	s.limits = auth.DefaultLimits
	s.limits.PerPair, s.limits.PerUser, s.limits.PerNetwork = c.LimitPair, c.LimitUser, c.LimitNetwork
	s.limits.Window = c.LimitWindow
	s.limits.Trusted = c.TrustedNetworks
	return s, nil
}

// positive and notNegative check a number or a duration (as int64).
func positive(name string, get func(config) int64, hint string) settingCheck {
	return func(c config, _ *settings) error {
		if get(c) <= 0 {
			return settingError(name, "must be positive%s", hint)
		}
		return nil
	}
}

func notNegative(name string, get func(config) int64, hint string) settingCheck {
	return func(c config, _ *settings) error {
		if get(c) < 0 {
			return settingError(name, "must not be negative%s", hint)
		}
		return nil
	}
}

func checkPorts(c config, _ *settings) error {
	var errs []error
	for _, p := range []struct {
		name string
		port uint16
	}{{"PORT_IMAP", c.PortIMAP}, {"PORT_POP3", c.PortPOP3}, {"PORT_SMTP", c.PortSMTP}, {"PORT_IMAPS", c.PortIMAPS}, {"PORT_POP3S", c.PortPOP3S}} {
		if p.port == 0 {
			errs = append(errs, settingError(p.name, "port 0 is not a port"))
		}
	}
	return errors.Join(errs...)
}

func checkVerifyTLS(c config, s *settings) error {
	var err error
	if s.security, err = imapcheck.ParseSecurity(c.VerifyTLS); err != nil {
		return settingError("VERIFY_TLS", "%v", err)
	}
	return nil
}

func checkBackends(c config, s *settings) error {
	if c.Backends == "" {
		return settingError("BACKENDS", "required: the mail servers, name=host;... (see the README)")
	}
	ports := backend.Ports{IMAP: c.PortIMAP, POP3: c.PortPOP3, SMTP: c.PortSMTP, IMAPS: c.PortIMAPS, POP3S: c.PortPOP3S}
	var err error
	if s.backends, err = backend.ParseBackends(c.Backends, ports, s.security == imapcheck.SecurityTLS); err != nil {
		return settingError("BACKENDS", "%v", err)
	}
	return nil
}

// named returns the backend setting names, or nil when name is empty or
// the backends did not parse (that error is reported already).
func (s *settings) named(setting, name string) (*backend.Backend, error) {
	if name == "" || s.backends == nil {
		return nil, nil
	}
	b, ok := s.backends[name]
	if !ok {
		return nil, settingError(setting, "no backend named %q in IMAPGATE_BACKENDS", name)
	}
	return b, nil
}

func checkUsersFile(c config, s *settings) error {
	if c.UsersFile == "" {
		if c.UsersFileBackend != "" {
			return settingError("USERS_FILE_BACKEND", "set, but IMAPGATE_USERS_FILE is not")
		}
		return nil
	}
	lineDefault, err := s.named("USERS_FILE_BACKEND", c.UsersFileBackend)
	if err != nil || s.backends == nil {
		return err
	}
	if s.usersFile, err = backend.OpenUsersFile(c.UsersFile, s.backends, lineDefault, s.logger); err != nil {
		return settingError("USERS_FILE", "%v", err)
	}
	s.routes = append(s.routes, backend.Rule{Name: backend.RuleUsersFile, Selector: s.usersFile})
	return nil
}

func checkFirstLetter(c config, s *settings) error {
	if c.FirstLetter == "" || s.backends == nil {
		return nil
	}
	fl, err := backend.ParseFirstLetter(c.FirstLetter, s.backends)
	if err != nil {
		return settingError("FIRST_LETTER", "%v", err)
	}
	s.routes = append(s.routes, backend.Rule{Name: backend.RuleFirstLetter, Selector: fl})
	return nil
}

func checkDefaultBackend(c config, s *settings) error {
	def, err := s.named("DEFAULT_BACKEND", c.DefaultBackend)
	if err != nil || s.backends == nil {
		return err
	}
	if def != nil {
		s.routes = append(s.routes, backend.Rule{Name: backend.RuleDefault, Selector: backend.Static{Backend: def}})
	}
	if c.UsersFile == "" && c.FirstLetter == "" && def == nil {
		return settingError("DEFAULT_BACKEND", "no rule selects a backend: set IMAPGATE_DEFAULT_BACKEND, IMAPGATE_FIRST_LETTER or IMAPGATE_USERS_FILE")
	}
	return nil
}

func checkVerifyCAFile(c config, s *settings) error {
	if c.VerifyCAFile == "" {
		return nil
	}
	if c.VerifyTLS == imapcheck.SecurityNone.String() {
		return settingError("VERIFY_CA_FILE", "set, but IMAPGATE_VERIFY_TLS is none")
	}
	pem, err := os.ReadFile(c.VerifyCAFile)
	if err != nil {
		return settingError("VERIFY_CA_FILE", "%v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return settingError("VERIFY_CA_FILE", "no PEM certificate in %s", c.VerifyCAFile)
	}
	s.tlsConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return nil
}

func checkVerifyTimeout(c config, _ *settings) error {
	if c.VerifyTimeout <= 0 {
		return settingError("VERIFY_TIMEOUT", "must be positive, got %s", c.VerifyTimeout)
	}
	return nil
}

func checkSMTP(c config, s *settings) error {
	var errs []error
	s.smtpVerify = imapcheck.Protocol(c.SMTPVerify)
	if s.smtpVerify != imapcheck.IMAP && s.smtpVerify != imapcheck.POP3 {
		errs = append(errs, settingError("SMTP_VERIFY", "%q is not imap or pop3", c.SMTPVerify))
	}
	relay, err := s.named("SMTP_RELAY", c.SMTPRelay)
	if err != nil {
		errs = append(errs, err)
	} else if relay != nil {
		if _, ok := relay.Proxy[imapcheck.SMTP]; !ok {
			errs = append(errs, settingError("SMTP_RELAY", "backend %q has no smtp address", c.SMTPRelay))
		}
		s.relay = relay
	}
	return errors.Join(errs...)
}

// The HTTP servers IMAPGATE_HTTP_SERVER chooses from.
const (
	httpServerBuiltin = "builtin"  // auth/http1: imapgate's own
	httpServerNetHTTP = "net/http" // the standard library's, to compare
)

func checkHTTPServer(c config, _ *settings) error {
	if c.HTTPServer != httpServerBuiltin && c.HTTPServer != httpServerNetHTTP {
		return settingError("HTTP_SERVER", "%q is not %s or %s", c.HTTPServer, httpServerBuiltin, httpServerNetHTTP)
	}
	return nil
}

// newLogger builds the log/slog logger the settings ask for.
func newLogger(c config, out io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, settingError("LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return nil, settingError("LOG_FORMAT", "%q is not text or json", c.LogFormat)
}
