package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/admin"
	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// settings are the settings checked and parsed: what the service is
// built from (wire). Nothing in them still needs checking.
type settings struct {
	config
	logger    *slog.Logger
	security  imapcheck.Security
	backends  map[string]*backend.Backend
	usersFile *backend.UsersFile // nil without IMAPGATE_USERS_FILE
	// rules are the configured routing rules by name; routes puts them in
	// the order IMAPGATE_ROUTES gives.
	rules       map[string]backend.Selector
	routes      backend.Chain
	directories []*backend.Directory // SQL, LDAP: probed in the background
	relay       *backend.Backend
	smtpVerify  imapcheck.Protocol
	tlsConfig   *tls.Config
	limits      auth.Limits
	maxConns    int // the cap on auth_http connections, derived if need be
	// adminTokens are IMAPGATE_ADMIN_TOKEN's tokens; nil turns the admin
	// API off.
	adminTokens *admin.Tokens
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
	positive("SQL_MAX_CONNS", func(c config) int64 { return int64(c.SQLMaxConns) }, ""),
	positive("SQL_TIMEOUT", func(c config) int64 { return int64(c.SQLTimeout) }, ""),
	positive("LDAP_MAX_CONNS", func(c config) int64 { return int64(c.LDAPMaxConns) }, ""),
	positive("LDAP_TIMEOUT", func(c config) int64 { return int64(c.LDAPTimeout) }, ""),
	checkSQL,
	checkLDAP,
	notNegative("ROUTE_CACHE_TTL", func(c config) int64 { return int64(c.RouteCacheTTL) }, " (0 turns the cache off)"),
	notNegative("ROUTE_CACHE_NEGATIVE_TTL", func(c config) int64 { return int64(c.RouteCacheNegTTL) }, " (0: unknown users are not remembered)"),
	notNegative("ROUTE_CACHE_STALE", func(c config) int64 { return int64(c.RouteCacheStale) }, " (0: never serve an expired answer)"),
	positive("ROUTE_CACHE_SIZE", func(c config) int64 { return int64(c.RouteCacheSize) }, ""),
	checkRoutes,
	checkVerifyCAFile,
	checkVerifyTimeout,
	checkSMTP,
	positive("CACHE_SIZE", func(c config) int64 { return int64(c.CacheSize) }, ""),
	notNegative("CACHE_TTL", func(c config) int64 { return int64(c.CacheTTL) }, " (0 turns the cache off)"),
	notNegative("MAX_CHECKS", func(c config) int64 { return int64(c.MaxChecks) }, " (0 = no bound)"),
	notNegative("MAX_CHECKS_PER_NETWORK", func(c config) int64 { return int64(c.MaxChecksPerNet) }, " (0 = no bound but IMAPGATE_MAX_CHECKS)"),
	checkMaxConns,
	notNegative("LIMIT_PAIR", func(c config) int64 { return int64(c.LimitPair) }, " (0 turns this limit off)"),
	notNegative("LIMIT_USER", func(c config) int64 { return int64(c.LimitUser) }, " (0 turns this limit off)"),
	notNegative("LIMIT_NETWORK", func(c config) int64 { return int64(c.LimitNetwork) }, " (0 turns this limit off)"),
	positive("LIMIT_WINDOW", func(c config) int64 { return int64(c.LimitWindow) }, ""),
	positive("LIMIT_MAX_TRACKED", func(c config) int64 { return int64(c.LimitMaxTracked) }, ""),
	checkStateURL,
	positive("STATE_TIMEOUT", func(c config) int64 { return int64(c.StateTimeout) }, ""),
	positive("PROBE_INTERVAL", func(c config) int64 { return int64(c.ProbeInterval) }, ""),
	notNegative("DEGRADE_AFTER", func(c config) int64 { return int64(c.DegradeAfter) }, " (0 = never)"),
	checkAdmin,
	checkHTTPServer,
}

// loadSettings reads every setting through lookuper and checks it: the
// first of the two steps of a start (the second is newService). The error
// names every bad setting, in a fixed order; the settings returned with
// it hold the parts that did check, for -check-config, never for a start.
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
		return s, sortedErrors(append(unjoin(readErr), errs...))
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
// in a fixed order, and comes with the settings that did check (see
// loadSettings). logOut receives the log of the service built from the
// result; nil discards it (a check of the configuration, not a start).
func validate(c config, logOut io.Writer) (*settings, error) {
	s := &settings{config: c, rules: make(map[string]backend.Selector)}
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
		return s, err
	}
	s.limits = auth.DefaultLimits
	s.limits.PerPair, s.limits.PerUser, s.limits.PerNetwork = c.LimitPair, c.LimitUser, c.LimitNetwork
	s.limits.Window, s.limits.MaxTracked = c.LimitWindow, c.LimitMaxTracked
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
	backends, err := backend.ParseBackendsWith(c.Backends, s.defaults())
	if err == nil {
		err = backend.LoadCheckRoots(backends)
	}
	if err != nil {
		return settingError("BACKENDS", "%v", err)
	}
	s.backends = backends
	return nil
}

// defaults are what a backend spec, or a directory's answer naming a
// host, leaves to the global settings.
func (s *settings) defaults() backend.Defaults {
	c := s.config
	return backend.Defaults{
		Ports:    backend.Ports{IMAP: c.PortIMAP, POP3: c.PortPOP3, SMTP: c.PortSMTP, IMAPS: c.PortIMAPS, POP3S: c.PortPOP3S},
		Security: s.security,
	}
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
	s.rules[backend.RuleUsersFile] = s.usersFile
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
	s.rules[backend.RuleFirstLetter] = fl
	return nil
}

func checkDefaultBackend(c config, s *settings) error {
	def, err := s.named("DEFAULT_BACKEND", c.DefaultBackend)
	if err != nil || s.backends == nil {
		return err
	}
	if def != nil {
		s.rules[backend.RuleDefault] = backend.Static{Backend: def}
	}
	if c.UsersFile == "" && c.FirstLetter == "" && def == nil && c.SQLURL == "" && c.LDAPURL == "" {
		return settingError("DEFAULT_BACKEND", "no rule selects a backend: set IMAPGATE_DEFAULT_BACKEND, IMAPGATE_FIRST_LETTER, IMAPGATE_USERS_FILE, IMAPGATE_SQL_URL or IMAPGATE_LDAP_URL")
	}
	return nil
}

// checkSQL opens the SQL directory (without connecting: a database down
// at start is a directory down, not a bad setting).
func checkSQL(c config, s *settings) error {
	if c.SQLURL == "" {
		if c.SQLQuery != "" {
			return settingError("SQL_QUERY", "set, but IMAPGATE_SQL_URL is not")
		}
		return nil
	}
	if s.backends == nil {
		return nil
	}
	src, err := backend.OpenSQL(backend.SQLConfig{URL: c.SQLURL, Query: c.SQLQuery, Backends: s.backends,
		Defaults: s.defaults(), MaxConns: c.SQLMaxConns, Timeout: c.SQLTimeout})
	if err != nil {
		return directorySettingError("SQL_", err)
	}
	s.addDirectory(backend.RuleSQL, src)
	return nil
}

// checkLDAP opens the LDAP directory (without connecting).
func checkLDAP(c config, s *settings) error {
	if c.LDAPURL == "" {
		if c.LDAPBaseDN != "" || c.LDAPBindDN != "" {
			return settingError("LDAP_URL", "unset, but IMAPGATE_LDAP_BASE_DN or _BIND_DN is set")
		}
		return nil
	}
	if s.backends == nil {
		return nil
	}
	src, err := backend.OpenLDAP(backend.LDAPConfig{URL: c.LDAPURL, StartTLS: c.LDAPStartTLS, CAFile: c.LDAPCAFile,
		BindDN: c.LDAPBindDN, BindPassword: c.LDAPBindPassword, BaseDN: c.LDAPBaseDN, Filter: c.LDAPFilter,
		Attribute: c.LDAPAttribute, Backends: s.backends, Defaults: s.defaults(), MaxConns: c.LDAPMaxConns, Timeout: c.LDAPTimeout})
	if err != nil {
		return directorySettingError("LDAP_", err)
	}
	s.addDirectory(backend.RuleLDAP, src)
	return nil
}

// directorySettingError names the setting of a directory's bad field.
func directorySettingError(prefix string, err error) error {
	field := "URL"
	var ce *backend.ConfigError
	if errors.As(err, &ce) {
		field = ce.Field
	}
	name := map[string]string{"URL": "URL", "Query": "QUERY", "Filter": "FILTER", "BaseDN": "BASE_DN",
		"BindDN": "BIND_DN", "BindPassword": "BIND_PASSWORD", "CAFile": "CA_FILE", "Attribute": "ATTRIBUTE"}[field]
	if name == "" {
		name = "URL"
	}
	return settingError(prefix+name, "%v", err)
}

// addDirectory puts a directory, behind its cache, among the rules.
func (s *settings) addDirectory(name string, src backend.Source) {
	// A setting of 0 turns a part of the cache off; the Directory reads
	// zero as its default and a negative value as off.
	off := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d
	}
	d := &backend.Directory{Name: name, Source: src, TTL: off(s.RouteCacheTTL), NegativeTTL: off(s.RouteCacheNegTTL),
		Stale: off(s.RouteCacheStale), Size: s.RouteCacheSize}
	s.rules[name] = d
	s.directories = append(s.directories, d)
}

// checkRoutes puts the rules in IMAPGATE_ROUTES's order.
func checkRoutes(c config, s *settings) error {
	if s.backends == nil || len(s.rules) == 0 {
		return nil // reported already
	}
	routes, err := backend.BuildChain(c.Routes, s.rules)
	if err != nil {
		return settingError("ROUTES", "%v", err)
	}
	s.routes = routes
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

// checkStateURL checks the shared store's URL; its errors never hold the
// URL's password.
func checkStateURL(c config, _ *settings) error {
	if c.StateURL == "" {
		return nil
	}
	if !strings.HasPrefix(c.StateURL, "redis://") && !strings.HasPrefix(c.StateURL, "rediss://") {
		return settingError("STATE_URL", "want a redis:// or rediss:// URL (Redis or Valkey)")
	}
	if _, err := state.ParseRedisURL(c.StateURL); err != nil {
		return settingError("STATE_URL", "%v", err)
	}
	return nil
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

// checkAdmin checks the admin API's settings: a token turns it on, and
// it is served on IMAPGATE_ADMIN_LISTEN or the operations listener, never
// on nginx's auth_http listener. Its errors never hold a token.
func checkAdmin(c config, s *settings) error {
	var errs []error
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, settingError("ADMIN_LISTEN", "%v", err))
		} else if c.AdminToken == "" {
			errs = append(errs, settingError("ADMIN_LISTEN", "set, but IMAPGATE_ADMIN_TOKEN is not: the admin API is off without a token"))
		}
	}
	if c.AdminURL != "" {
		if u, err := url.Parse(c.AdminURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, settingError("ADMIN_URL", "%q is not an http:// or https:// URL", c.AdminURL))
		}
	}
	if c.AdminToken == "" {
		return errors.Join(errs...)
	}
	tokens, err := admin.ParseTokens(c.AdminToken)
	switch {
	case err != nil:
		errs = append(errs, settingError("ADMIN_TOKEN", "%v", err))
	case c.AdminListen == "" && c.MetricsListen == "":
		errs = append(errs, settingError("ADMIN_TOKEN", "set, but neither IMAPGATE_ADMIN_LISTEN nor IMAPGATE_METRICS_LISTEN is: the admin API is never served on IMAPGATE_LISTEN, nginx's"))
	default:
		s.adminTokens = tokens
	}
	return errors.Join(errs...)
}
