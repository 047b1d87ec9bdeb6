package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Defaults of an LDAP directory.
const (
	DefaultLDAPFilter    = "(uid=%s)"
	DefaultLDAPAttribute = "mailHost"
	// DefaultLDAPMaxConns bounds an LDAP directory's connections when
	// LDAPConfig.MaxConns is zero.
	DefaultLDAPMaxConns = 4
)

// LDAPConfig configures an LDAP directory (IMAPGATE_LDAP_*).
type LDAPConfig struct {
	// URL is ldap://host[:port] or ldaps://host[:port] (implicit TLS).
	URL string
	// StartTLS upgrades an ldap:// connection with StartTLS before
	// binding.
	StartTLS bool
	// CAFile is the PEM bundle that verifies the server's certificate for
	// ldaps:// and StartTLS; empty means the system roots.
	CAFile string
	// BindDN and BindPassword are the simple bind; an empty BindDN means
	// no bind (anonymous searches).
	BindDN, BindPassword string
	// BaseDN is where the search starts (the whole subtree is searched).
	BaseDN string
	// Filter finds the user's entry; each %s is the user, escaped as RFC
	// 4515 says. Empty means DefaultLDAPFilter.
	Filter string
	// Attribute holds the backend name or host; empty means
	// DefaultLDAPAttribute.
	Attribute string
	// Backends are the backends an answer may name; any other answer is a
	// host on the default ports.
	Backends map[string]*Backend
	// Defaults are the ports and check TLS mode of a host answer.
	Defaults Defaults
	// MaxConns bounds the open connections; zero means DefaultLDAPMaxConns.
	MaxConns int
	// Timeout bounds one lookup, waiting for a connection, connecting and
	// binding included; zero means DefaultLookupTimeout.
	Timeout time.Duration
}

// LDAP is a Source that looks users up in an LDAP directory with
// go-ldap. It keeps at most MaxConns connections, bound once each, and
// replaces a connection that fails; a pooled connection found dead (the
// server restarted) is replaced and the lookup tried once more. Its errors
// never contain the bind password.
type LDAP struct {
	cfg     LDAPConfig
	tls     *tls.Config
	timeout time.Duration
	answers *answers
	// slots holds a token per connection in use or being made, so that
	// at most cap(slots) exist; idle holds the ones not in use.
	slots chan struct{}
	idle  chan *ldap.Conn

	mu     sync.Mutex
	closed bool
}

// OpenLDAP checks cfg; a bad field is a *ConfigError naming it. It does
// not connect: a directory that is down at
// start is reported by Ping and by lookups.
func OpenLDAP(cfg LDAPConfig) (*LDAP, error) {
	if cfg.Filter == "" {
		cfg.Filter = DefaultLDAPFilter
	}
	if cfg.Attribute == "" {
		cfg.Attribute = DefaultLDAPAttribute
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultLDAPMaxConns
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultLookupTimeout
	}
	host, err := checkLDAPURL(cfg.URL, cfg.StartTLS)
	if err != nil {
		return nil, configError("URL", err)
	}
	if err := checkLDAPFilter(cfg.Filter); err != nil {
		return nil, configError("Filter", err)
	}
	if cfg.BaseDN == "" {
		return nil, configError("BaseDN", errors.New("ldap: base DN: empty"))
	}
	if _, err := ldap.ParseDN(cfg.BaseDN); err != nil {
		return nil, configError("BaseDN", fmt.Errorf("ldap: base DN %q: %w", cfg.BaseDN, err))
	}
	if cfg.BindDN != "" {
		if _, err := ldap.ParseDN(cfg.BindDN); err != nil {
			return nil, configError("BindDN", fmt.Errorf("ldap: bind DN %q: %w", cfg.BindDN, err))
		}
		if cfg.BindPassword == "" {
			return nil, configError("BindPassword", errors.New("ldap: bind DN set but no bind password"))
		}
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, configError("CAFile", fmt.Errorf("ldap: CA file: %w", err))
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, configError("CAFile", fmt.Errorf("ldap: CA file: no PEM certificate in %s", cfg.CAFile))
		}
	}
	return &LDAP{cfg: cfg, tls: tc, timeout: timeout, answers: newAnswers(cfg.Backends, cfg.Defaults),
		slots: make(chan struct{}, cfg.MaxConns), idle: make(chan *ldap.Conn, cfg.MaxConns)}, nil
}

// checkLDAPURL checks an ldap:// or ldaps:// URL of a host and an
// optional port, and returns the host.
func checkLDAPURL(raw string, startTLS bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("ldap: URL: not a valid URL: want ldap://host[:port] or ldaps://host[:port]")
	}
	switch strings.ToLower(u.Scheme) {
	case "ldap":
	case "ldaps":
		if startTLS {
			return "", errors.New("ldap: StartTLS with an ldaps:// URL: the connection is TLS already")
		}
	default:
		return "", fmt.Errorf("ldap: URL: scheme %q: want ldap:// or ldaps://", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", errors.New("ldap: URL: no host")
	}
	if u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("ldap: URL: only ldap[s]://host[:port]; the base DN, filter and attribute are settings of their own")
	}
	return u.Hostname(), nil
}

// checkLDAPFilter checks that filter has the user (%s) and no other
// verb, and compiles with a user put in.
func checkLDAPFilter(filter string) error {
	if !strings.Contains(filter, "%s") {
		return fmt.Errorf("ldap: filter %q: no %%s for the user", filter)
	}
	if strings.Count(filter, "%") != strings.Count(filter, "%s") {
		return fmt.Errorf("ldap: filter %q: %% other than %%s", filter)
	}
	if _, err := ldap.CompileFilter(fillFilter(filter, "user")); err != nil {
		return fmt.Errorf("ldap: filter %q: %w", filter, err)
	}
	return nil
}

// fillFilter puts the user, escaped per RFC 4515, in place of each %s:
// "*)(uid=*" becomes "\2a\29\28uid=\2a", a value and never filter syntax.
func fillFilter(filter, user string) string {
	return strings.ReplaceAll(filter, "%s", ldap.EscapeFilter(user))
}

// Select searches the user's entry and maps its attribute to a backend.
// No entry, or an entry without the attribute, is no such user; several
// entries are an *AnswerError; a failing directory is an error.
func (l *LDAP) Select(ctx context.Context, user string) (*Backend, error) {
	if !plausibleUser(user) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	req := ldap.NewSearchRequest(l.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, // enough to tell one entry from several
		int(l.timeout/time.Second)+1, false, fillFilter(l.cfg.Filter, user), []string{l.cfg.Attribute}, nil)
	var res *ldap.SearchResult
	err := l.withConn(ctx, func(c *ldap.Conn) error {
		var err error
		res, err = c.Search(req)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return &AnswerError{Msg: "ldap: more than one entry matches the user"}
		}
		return err
	})
	if err != nil {
		return nil, l.fail(err)
	}
	switch len(res.Entries) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, &AnswerError{Msg: "ldap: more than one entry matches the user"}
	}
	values := res.Entries[0].GetEqualFoldAttributeValues(l.cfg.Attribute)
	if len(values) == 0 {
		return nil, nil
	}
	return l.answers.backend(values[0])
}

// Ping reads the base DN's entry, which proves the server answers, the
// bind works and the base exists.
func (l *LDAP) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	req := ldap.NewSearchRequest(l.cfg.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, int(l.timeout/time.Second)+1, false, "(objectClass=*)", []string{"1.1"}, nil)
	return l.fail(l.withConn(ctx, func(c *ldap.Conn) error {
		_, err := c.Search(req)
		return err
	}))
}

// fail redacts the bind password from err; an *AnswerError stays one.
func (l *LDAP) fail(err error) error {
	var bad *AnswerError
	if err == nil || errors.As(err, &bad) {
		return err
	}
	return redact(err, l.cfg.BindPassword)
}

// withConn runs op on a bound connection within ctx. A connection op
// fails on is closed (a result error may leave it in any state, and
// dialling again is cheap); when it was a pooled one that failed at the
// network level, op is tried once more on a new connection, since the
// server may simply have been restarted since it was last used.
func (l *LDAP) withConn(ctx context.Context, op func(*ldap.Conn) error) error {
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for one of %d LDAP connections: %w", cap(l.slots), ctx.Err())
	}
	defer func() { <-l.slots }()
	for attempt := 0; ; attempt++ {
		c, pooled := l.takeIdle()
		if c == nil {
			var err error
			if c, err = l.dial(ctx); err != nil {
				return err
			}
		}
		err := l.run(ctx, c, op)
		if err == nil {
			l.putIdle(c)
			return nil
		}
		c.Close()
		var bad *AnswerError
		if pooled && attempt == 0 && ctx.Err() == nil && !errors.As(err, &bad) && ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
			continue
		}
		return err
	}
}

// putIdle keeps c for the next lookup, or closes it once Close has been
// called.
func (l *LDAP) putIdle(c *ldap.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return
	}
	l.idle <- c // cannot block: a slot is held per connection
}

// takeIdle returns an idle connection that is not known to be closed.
func (l *LDAP) takeIdle() (*ldap.Conn, bool) {
	for {
		select {
		case c := <-l.idle:
			if c.IsClosing() {
				c.Close()
				continue
			}
			return c, true
		default:
			return nil, false
		}
	}
}

// run runs op on c, closing c if ctx ends first (go-ldap's requests take
// no context), and reports ctx's error in that case.
func (l *LDAP) run(ctx context.Context, c *ldap.Conn, op func(*ldap.Conn) error) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetTimeout(time.Until(dl))
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := op(c)
	if !stop() {
		return fmt.Errorf("ldap: %w", ctx.Err())
	}
	return err
}

// dial connects, upgrades with StartTLS when asked, and binds.
func (l *LDAP) dial(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: l.timeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	c, err := ldap.DialURL(l.cfg.URL, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(l.tls))
	if err != nil {
		return nil, fmt.Errorf("ldap: connect: %w", err)
	}
	err = l.run(ctx, c, func(c *ldap.Conn) error {
		if l.cfg.StartTLS {
			if err := c.StartTLS(l.tls); err != nil {
				return fmt.Errorf("ldap: StartTLS: %w", err)
			}
		}
		if l.cfg.BindDN != "" {
			if err := c.Bind(l.cfg.BindDN, l.cfg.BindPassword); err != nil {
				return fmt.Errorf("ldap: bind as %s: %w", l.cfg.BindDN, err)
			}
		}
		return nil
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the idle connections; connections in use are closed when
// their lookup ends.
func (l *LDAP) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for {
		select {
		case c := <-l.idle:
			c.Close()
		default:
			return nil
		}
	}
}
