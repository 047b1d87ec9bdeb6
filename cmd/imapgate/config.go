package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// envPrefix starts the name of every setting.
const envPrefix = "IMAPGATE_"

// config is every setting, read from the environment. The names are
// imapgate's public interface: keep them stable and documented in the
// README.
type config struct {
	Listen           string        `env:"LISTEN, default=127.0.0.1:9180"`
	Backends         string        `env:"BACKENDS, required"`
	PortIMAP         uint16        `env:"PORT_IMAP, default=143"`
	PortPOP3         uint16        `env:"PORT_POP3, default=110"`
	PortSMTP         uint16        `env:"PORT_SMTP, default=25"`
	PortIMAPS        uint16        `env:"PORT_IMAPS, default=993"`
	PortPOP3S        uint16        `env:"PORT_POP3S, default=995"`
	UsersFile        string        `env:"USERS_FILE"`
	UsersFileBackend string        `env:"USERS_FILE_BACKEND"`
	FirstLetter      string        `env:"FIRST_LETTER"`
	DefaultBackend   string        `env:"DEFAULT_BACKEND"`
	VerifyTLS        string        `env:"VERIFY_TLS, default=none"`
	VerifyCAFile     string        `env:"VERIFY_CA_FILE"`
	VerifyTimeout    time.Duration `env:"VERIFY_TIMEOUT, default=10s"`
	SMTPVerify       string        `env:"SMTP_VERIFY, default=imap"`
	ForwardClientIP  bool          `env:"FORWARD_CLIENT_IP, default=true"`
	SMTPRelay        string        `env:"SMTP_RELAY"`
	SharedSecret     string        `env:"SHARED_SECRET"`
	AllowFrom        networks      `env:"ALLOW_FROM"`
	MaxChecks        int           `env:"MAX_CHECKS, default=32"`
	CacheTTL         time.Duration `env:"CACHE_TTL, default=5m"`
	CacheSize        int           `env:"CACHE_SIZE, default=100000"`
	LimitPair        int           `env:"LIMIT_PAIR, default=10"`
	LimitUser        int           `env:"LIMIT_USER, default=30"`
	LimitNetwork     int           `env:"LIMIT_NETWORK, default=100"`
	LimitWindow      time.Duration `env:"LIMIT_WINDOW, default=15m"`
	TrustedNetworks  networks      `env:"TRUSTED_NETWORKS"`
	MetricsListen    string        `env:"METRICS_LISTEN"`
	ProbeInterval    time.Duration `env:"PROBE_INTERVAL, default=5s"`
	LogFormat        string        `env:"LOG_FORMAT, default=text"`
	LogLevel         string        `env:"LOG_LEVEL, default=info"`
}

// networks is a ","-separated list of CIDR prefixes; a bare address is a
// network of one.
type networks []netip.Prefix

// EnvDecode parses the list for go-envconfig.
func (n *networks) EnvDecode(val string) error {
	*n = nil
	for _, item := range strings.Split(val, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			ip, err := netip.ParseAddr(item)
			if err != nil {
				return fmt.Errorf("%q is not an address or CIDR network", item)
			}
			*n = append(*n, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return fmt.Errorf("%q is not an address or CIDR network", item)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		*n = append(*n, p.Masked())
	}
	return nil
}

// settingError is a bad setting; its text starts with the variable's name
// so the operator knows what to fix.
func settingError(name string, format string, args ...any) error {
	return fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...))
}

// service is everything main wires together from a config.
type service struct {
	cfg       config
	logger    *slog.Logger
	handler   *auth.Handler
	usersFile *backend.UsersFile // nil without IMAPGATE_USERS_FILE
	health    *backend.Health
	registry  *prometheus.Registry
	// logFlusher, when set, runs beside the server and flushes the log
	// buffer until its context ends.
	logFlusher func(context.Context)
}

// loadConfig reads the settings through lookuper and checks each one.
func loadConfig(ctx context.Context, lookuper envconfig.Lookuper) (config, error) {
	var cfg config
	err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target:   &cfg,
		Lookuper: envconfig.PrefixLookuper(envPrefix, lookuper),
	})
	if err != nil {
		// go-envconfig names the field and the variable; say the variable
		// first, as every other setting error does.
		return cfg, fmt.Errorf("%s", envconfigMessage(err))
	}
	return cfg, nil
}

// envconfigMessage rewrites go-envconfig's errors, which name the Go field
// ("PortIMAP: strconv.ParseUint: …") or end with the variable, so that they
// start with the variable the operator has to fix.
func envconfigMessage(err error) string {
	msg := err.Error()
	field, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return msg
	}
	f, ok := reflect.TypeFor[config]().FieldByName(field)
	if !ok {
		return msg
	}
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	rest = strings.TrimSuffix(rest, ": "+envPrefix+name)
	return envPrefix + name + ": " + rest
}

// newService builds the handler and its parts from cfg. logOut receives
// the log.
func newService(cfg config, logOut io.Writer) (*service, error) {
	logger, err := newLogger(cfg, logOut)
	if err != nil {
		return nil, err
	}
	security := imapcheck.Security(cfg.VerifyTLS)
	switch security {
	case imapcheck.SecurityNone, imapcheck.SecurityStartTLS, imapcheck.SecurityTLS:
	default:
		return nil, settingError("VERIFY_TLS", "%q is not none, starttls or tls", cfg.VerifyTLS)
	}
	ports := backend.Ports{
		IMAP: cfg.PortIMAP, POP3: cfg.PortPOP3, SMTP: cfg.PortSMTP,
		IMAPS: cfg.PortIMAPS, POP3S: cfg.PortPOP3S,
	}
	for name, port := range map[string]uint16{
		"PORT_IMAP": cfg.PortIMAP, "PORT_POP3": cfg.PortPOP3, "PORT_SMTP": cfg.PortSMTP,
		"PORT_IMAPS": cfg.PortIMAPS, "PORT_POP3S": cfg.PortPOP3S,
	} {
		if port == 0 {
			return nil, settingError(name, "port 0 is not a port")
		}
	}
	backends, err := backend.ParseBackends(cfg.Backends, ports, security == imapcheck.SecurityTLS)
	if err != nil {
		return nil, settingError("BACKENDS", "%v", err)
	}
	named := func(setting, name string) (*backend.Backend, error) {
		if name == "" {
			return nil, nil
		}
		b, ok := backends[name]
		if !ok {
			return nil, settingError(setting, "no backend named %q in IMAPGATE_BACKENDS", name)
		}
		return b, nil
	}

	svc := &service{cfg: cfg, logger: logger}
	var chain backend.Chain
	if cfg.UsersFile != "" {
		lineDefault, err := named("USERS_FILE_BACKEND", cfg.UsersFileBackend)
		if err != nil {
			return nil, err
		}
		svc.usersFile, err = backend.OpenUsersFile(cfg.UsersFile, backends, lineDefault, logger)
		if err != nil {
			return nil, settingError("USERS_FILE", "%v", err)
		}
		chain = append(chain, backend.Rule{Name: backend.RuleUsersFile, Selector: svc.usersFile})
	} else if cfg.UsersFileBackend != "" {
		return nil, settingError("USERS_FILE_BACKEND", "set, but IMAPGATE_USERS_FILE is not")
	}
	if cfg.FirstLetter != "" {
		fl, err := backend.ParseFirstLetter(cfg.FirstLetter, backends)
		if err != nil {
			return nil, settingError("FIRST_LETTER", "%v", err)
		}
		chain = append(chain, backend.Rule{Name: backend.RuleFirstLetter, Selector: fl})
	}
	def, err := named("DEFAULT_BACKEND", cfg.DefaultBackend)
	if err != nil {
		return nil, err
	}
	if def != nil {
		chain = append(chain, backend.Rule{Name: backend.RuleDefault, Selector: backend.Static{Backend: def}})
	}
	if len(chain) == 0 {
		return nil, settingError("DEFAULT_BACKEND", "no rule selects a backend: set IMAPGATE_DEFAULT_BACKEND, IMAPGATE_FIRST_LETTER or IMAPGATE_USERS_FILE")
	}
	relay, err := named("SMTP_RELAY", cfg.SMTPRelay)
	if err != nil {
		return nil, err
	}
	if relay != nil {
		if _, ok := relay.Proxy[imapcheck.SMTP]; !ok {
			return nil, settingError("SMTP_RELAY", "backend %q has no smtp address", cfg.SMTPRelay)
		}
	}

	smtpVerify := imapcheck.Protocol(cfg.SMTPVerify)
	if smtpVerify != imapcheck.IMAP && smtpVerify != imapcheck.POP3 {
		return nil, settingError("SMTP_VERIFY", "%q is not imap or pop3", cfg.SMTPVerify)
	}
	if cfg.VerifyTimeout <= 0 {
		return nil, settingError("VERIFY_TIMEOUT", "must be positive, got %s", cfg.VerifyTimeout)
	}
	var tlsConfig *tls.Config
	if cfg.VerifyCAFile != "" {
		if security == imapcheck.SecurityNone {
			return nil, settingError("VERIFY_CA_FILE", "set, but IMAPGATE_VERIFY_TLS is none")
		}
		pem, err := os.ReadFile(cfg.VerifyCAFile)
		if err != nil {
			return nil, settingError("VERIFY_CA_FILE", "%v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, settingError("VERIFY_CA_FILE", "no PEM certificate in %s", cfg.VerifyCAFile)
		}
		tlsConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}

	if cfg.CacheTTL < 0 {
		return nil, settingError("CACHE_TTL", "must not be negative, got %s", cfg.CacheTTL)
	}
	if cfg.MaxChecks < 0 {
		return nil, settingError("MAX_CHECKS", "must not be negative (0 = no bound), got %d", cfg.MaxChecks)
	}
	if cfg.CacheSize <= 0 {
		return nil, settingError("CACHE_SIZE", "must be positive, got %d", cfg.CacheSize)
	}
	for name, v := range map[string]int{"LIMIT_PAIR": cfg.LimitPair, "LIMIT_USER": cfg.LimitUser, "LIMIT_NETWORK": cfg.LimitNetwork} {
		if v < 0 {
			return nil, settingError(name, "must not be negative (0 turns this limit off), got %d", v)
		}
	}
	if cfg.LimitWindow <= 0 {
		return nil, settingError("LIMIT_WINDOW", "must be positive, got %s", cfg.LimitWindow)
	}
	limits := auth.DefaultLimits
	limits.PerPair, limits.PerUser, limits.PerNetwork = cfg.LimitPair, cfg.LimitUser, cfg.LimitNetwork
	limits.Window = cfg.LimitWindow
	limits.Trusted = cfg.TrustedNetworks

	if cfg.ProbeInterval <= 0 {
		return nil, settingError("PROBE_INTERVAL", "must be positive, got %s", cfg.ProbeInterval)
	}
	svc.registry = prometheus.NewRegistry()
	svc.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := auth.NewMetrics(svc.registry)
	svc.health = &backend.Health{
		Backends: backends,
		Interval: cfg.ProbeInterval,
		// A probe is a connect and a greeting: if that takes longer than a
		// login may, the backend is as good as down.
		Timeout: min(cfg.VerifyTimeout, 3*time.Second),
		OnChange: func(name string, proto imapcheck.Protocol, addr string, up bool, err error) {
			metrics.BackendUp(name, string(proto), up)
			if up {
				logger.Info("backend up", "backend", name, "protocol", string(proto), "addr", addr)
			} else {
				logger.Warn("backend down", "backend", name, "protocol", string(proto), "addr", addr, "err", err)
			}
		},
	}

	svc.handler = &auth.Handler{
		Routes: chain,
		Verifier: &imapcheck.Verifier{
			Security:  security,
			TLSConfig: tlsConfig,
			Timeout:   cfg.VerifyTimeout,
			// Dovecot's auth penalty is per source address: told the
			// client's, it slows the guesser, not every user.
			ForwardClientIP: cfg.ForwardClientIP,
		},
		Resolver:     &backend.Resolver{},
		SMTPVerify:   smtpVerify,
		SMTPRelay:    relay,
		SharedSecret: cfg.SharedSecret,
		AllowFrom:    cfg.AllowFrom,
		MaxChecks:    cfg.MaxChecks,
		CacheTTL:     cfg.CacheTTL,
		CacheSize:    cfg.CacheSize,
		Limits:       &limits,
		Metrics:      metrics,
		Health:       svc.health,
		// The check has VerifyTimeout; resolving the backend's name for
		// nginx gets a little more.
		Timeout: cfg.VerifyTimeout + 2*time.Second,
		Logger:  logger,
	}
	return svc, nil
}

// newLogger builds the log/slog logger the settings ask for.
func newLogger(cfg config, out io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, settingError("LOG_LEVEL", "%q is not debug, info, warn or error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return nil, settingError("LOG_FORMAT", "%q is not text or json", cfg.LogFormat)
}
