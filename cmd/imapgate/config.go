package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// envPrefix starts the name of every setting.
const envPrefix = "IMAPGATE_"

// config is every setting as read from the environment, before it is
// checked (validate). The names are imapgate's public interface: keep them
// stable and documented in the README. Every default is in defaultConfig.
type config struct {
	Listen           string        `env:"LISTEN"`
	Backends         string        `env:"BACKENDS"`
	PortIMAP         uint16        `env:"PORT_IMAP"`
	PortPOP3         uint16        `env:"PORT_POP3"`
	PortSMTP         uint16        `env:"PORT_SMTP"`
	PortIMAPS        uint16        `env:"PORT_IMAPS"`
	PortPOP3S        uint16        `env:"PORT_POP3S"`
	UsersFile        string        `env:"USERS_FILE"`
	UsersFileBackend string        `env:"USERS_FILE_BACKEND"`
	FirstLetter      string        `env:"FIRST_LETTER"`
	DefaultBackend   string        `env:"DEFAULT_BACKEND"`
	SQLURL           string        `env:"SQL_URL"`
	SQLQuery         string        `env:"SQL_QUERY"`
	SQLMaxConns      int           `env:"SQL_MAX_CONNS"`
	SQLTimeout       time.Duration `env:"SQL_TIMEOUT"`
	LDAPURL          string        `env:"LDAP_URL"`
	LDAPStartTLS     bool          `env:"LDAP_STARTTLS"`
	LDAPCAFile       string        `env:"LDAP_CA_FILE"`
	LDAPBindDN       string        `env:"LDAP_BIND_DN"`
	LDAPBindPassword string        `env:"LDAP_BIND_PASSWORD"`
	LDAPBaseDN       string        `env:"LDAP_BASE_DN"`
	LDAPFilter       string        `env:"LDAP_FILTER"`
	LDAPAttribute    string        `env:"LDAP_ATTRIBUTE"`
	LDAPMaxConns     int           `env:"LDAP_MAX_CONNS"`
	LDAPTimeout      time.Duration `env:"LDAP_TIMEOUT"`
	Routes           string        `env:"ROUTES"`
	RouteCacheTTL    time.Duration `env:"ROUTE_CACHE_TTL"`
	RouteCacheNegTTL time.Duration `env:"ROUTE_CACHE_NEGATIVE_TTL"`
	RouteCacheStale  time.Duration `env:"ROUTE_CACHE_STALE"`
	RouteCacheSize   int           `env:"ROUTE_CACHE_SIZE"`
	VerifyTLS        string        `env:"VERIFY_TLS"`
	VerifyCAFile     string        `env:"VERIFY_CA_FILE"`
	VerifyTimeout    time.Duration `env:"VERIFY_TIMEOUT"`
	SMTPVerify       string        `env:"SMTP_VERIFY"`
	ForwardClientIP  bool          `env:"FORWARD_CLIENT_IP"`
	SMTPRelay        string        `env:"SMTP_RELAY"`
	SharedSecret     string        `env:"SHARED_SECRET"`
	AllowFrom        networks      `env:"ALLOW_FROM"`
	MaxChecks        int           `env:"MAX_CHECKS"`
	MaxChecksPerNet  int           `env:"MAX_CHECKS_PER_NETWORK"`
	MaxConns         int           `env:"MAX_CONNS"`
	CacheTTL         time.Duration `env:"CACHE_TTL"`
	CacheSize        int           `env:"CACHE_SIZE"`
	LimitPair        int           `env:"LIMIT_PAIR"`
	LimitUser        int           `env:"LIMIT_USER"`
	LimitNetwork     int           `env:"LIMIT_NETWORK"`
	LimitWindow      time.Duration `env:"LIMIT_WINDOW"`
	LimitMaxTracked  int           `env:"LIMIT_MAX_TRACKED"`
	TrustedNetworks  networks      `env:"TRUSTED_NETWORKS"`
	StateURL         string        `env:"STATE_URL"`
	StateTimeout     time.Duration `env:"STATE_TIMEOUT"`
	MetricsListen    string        `env:"METRICS_LISTEN"`
	AdminToken       string        `env:"ADMIN_TOKEN"`
	AdminListen      string        `env:"ADMIN_LISTEN"`
	AdminURL         string        `env:"ADMIN_URL"`
	ProbeInterval    time.Duration `env:"PROBE_INTERVAL"`
	DegradeAfter     int           `env:"DEGRADE_AFTER"`
	LogFormat        string        `env:"LOG_FORMAT"`
	LogLevel         string        `env:"LOG_LEVEL"`
	HTTPServer       string        `env:"HTTP_SERVER"`
}

// defaultConfig is every setting's default: this is the one place they
// are written down, from the packages' own defaults where there are any.
func defaultConfig() config {
	ports := backend.DefaultPorts
	limits := auth.DefaultLimits
	return config{
		Listen:           "127.0.0.1:9180",
		PortIMAP:         ports.IMAP,
		PortPOP3:         ports.POP3,
		PortSMTP:         ports.SMTP,
		PortIMAPS:        ports.IMAPS,
		PortPOP3S:        ports.POP3S,
		SQLMaxConns:      backend.DefaultSQLMaxConns,
		SQLTimeout:       backend.DefaultLookupTimeout,
		LDAPFilter:       backend.DefaultLDAPFilter,
		LDAPAttribute:    backend.DefaultLDAPAttribute,
		LDAPMaxConns:     backend.DefaultLDAPMaxConns,
		LDAPTimeout:      backend.DefaultLookupTimeout,
		RouteCacheTTL:    backend.DefaultDirectoryTTL,
		RouteCacheNegTTL: backend.DefaultDirectoryNegativeTTL,
		RouteCacheStale:  backend.DefaultDirectoryStale,
		RouteCacheSize:   backend.DefaultDirectorySize,
		VerifyTLS:        imapcheck.SecurityNone.String(),
		VerifyTimeout:    imapcheck.DefaultTimeout,
		SMTPVerify:       string(imapcheck.IMAP),
		ForwardClientIP:  true,
		MaxChecks:        32,
		// A check costs Dovecot about 10 ms of a core: two at once leave a
		// two-core backend to everyone else (make bench, -only guessing).
		MaxChecksPerNet: 2,
		CacheTTL:        5 * time.Minute,
		CacheSize:       auth.DefaultCacheSize,
		LimitPair:       limits.PerPair,
		LimitUser:       limits.PerUser,
		LimitNetwork:    limits.PerNetwork,
		LimitWindow:     limits.Window,
		LimitMaxTracked: limits.MaxTracked,
		StateTimeout:    state.DefaultRedisTimeout,
		ProbeInterval:   backend.DefaultProbeInterval,
		DegradeAfter:    backend.DefaultDegradeAfter,
		LogFormat:       "text",
		LogLevel:        "info",
		HTTPServer:      httpServerBuiltin,
	}
}

// secretSettings are the settings that hold a secret. Each can also be
// read from a file named by the same variable with _FILE appended (for
// container secrets), and print-outs of the configuration redact them.
var secretSettings = []string{"SHARED_SECRET", "SQL_URL", "LDAP_BIND_PASSWORD", "STATE_URL", "ADMIN_TOKEN"}

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
	return &badSetting{name: name, msg: fmt.Sprintf(format, args...)}
}

// badSetting is the error of one setting, named without the prefix.
type badSetting struct {
	name, msg string
}

func (e *badSetting) Error() string { return envPrefix + e.name + ": " + e.msg }

// readConfig reads every setting through lookuper (variables without the
// prefix are not looked at). A setting that cannot be decoded keeps its
// default and is reported; all such errors are joined, in the order of
// config's fields.
func readConfig(ctx context.Context, lookuper envconfig.Lookuper) (config, error) {
	env := &secretFiles{env: envconfig.PrefixLookuper(envPrefix, lookuper)}
	var errs []error
	for {
		cfg := defaultConfig()
		err := envconfig.ProcessWith(ctx, &envconfig.Config{
			Target:           &cfg,
			Lookuper:         env,
			DefaultOverwrite: true,
		})
		bad := decodeError(err)
		if err == nil || bad == nil || slices.Contains(env.hidden, bad.name) {
			if err != nil && bad == nil {
				errs = append(errs, err)
			}
			errs = append(errs, env.errs...)
			return cfg, sortedErrors(errs)
		}
		// Read again with that variable hidden, so that the settings after
		// it are decoded and checked too.
		errs = append(errs, bad)
		env.hidden = append(env.hidden, bad.name)
		env.errs = nil
	}
}

// decodeError turns go-envconfig's error, which names the Go field
// ("PortIMAP: strconv.ParseUint: …") or ends with the variable, into one
// that names the variable; nil when it names no field of config.
func decodeError(err error) *badSetting {
	if err == nil {
		return nil
	}
	field, rest, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		return nil
	}
	f, ok := reflect.TypeFor[config]().FieldByName(field)
	if !ok {
		return nil
	}
	name := envName(f)
	return &badSetting{name: name, msg: strings.TrimSuffix(rest, ": "+envPrefix+name)}
}

// envName is the variable of a config field, without the prefix.
func envName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

// settingNames are the variables in the order of config's fields: the
// fixed order errors are reported in.
func settingNames() []string {
	t := reflect.TypeFor[config]()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		names = append(names, envName(t.Field(i)))
	}
	return names
}

// sortedErrors joins errs, settings in the order of config's fields
// (stable, so that one setting's errors keep their order).
func sortedErrors(errs []error) error {
	order := settingNames()
	rank := func(err error) int {
		var b *badSetting
		if errors.As(err, &b) {
			if i := slices.Index(order, strings.TrimSuffix(b.name, "_FILE")); i >= 0 {
				return i
			}
		}
		return len(order)
	}
	slices.SortStableFunc(errs, func(a, b error) int { return rank(a) - rank(b) })
	return errors.Join(errs...)
}

// secretFiles is the environment as the settings see it: a secret setting
// that is not set is read from the file its _FILE variable names, and
// variables in hidden read as unset.
type secretFiles struct {
	env    envconfig.Lookuper
	hidden []string
	errs   []error
}

// Lookup returns the setting key (without the prefix).
func (s *secretFiles) Lookup(key string) (string, bool) {
	if slices.Contains(s.hidden, key) {
		return "", false
	}
	v, set := s.env.Lookup(key)
	if !slices.Contains(secretSettings, key) {
		return v, set
	}
	path, fromFile := s.env.Lookup(key + "_FILE")
	switch {
	case set && fromFile:
		s.errs = append(s.errs, settingError(key, "set both %s%s and %s%s_FILE; set one", envPrefix, key, envPrefix, key))
		return "", false
	case !fromFile:
		return v, set
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// The error names the file, never its contents.
		s.errs = append(s.errs, settingError(key+"_FILE", "%v", err))
		return "", false
	}
	// A file written by an editor or echo ends with a line end that is not
	// part of the secret.
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), true
}
