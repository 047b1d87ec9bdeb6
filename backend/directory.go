package backend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// The names of the directory rules of a Chain.
const (
	RuleSQL  = "sql"
	RuleLDAP = "ldap"
)

// Defaults of a Directory's zero fields.
const (
	DefaultDirectoryTTL         = time.Minute
	DefaultDirectoryNegativeTTL = 10 * time.Second
	DefaultDirectoryStale       = 10 * time.Minute
	DefaultDirectorySize        = 100_000
	// DefaultLookupTimeout bounds one lookup of an SQL or LDAP source,
	// connecting included.
	DefaultLookupTimeout = 3 * time.Second
)

// Source is a directory of users: an SQL table, an LDAP tree. Its Select
// must bound each lookup in time itself; a Directory caches it.
type Source interface {
	Selector
	// Ping checks that the directory answers, so that its state is known
	// while nobody logs in.
	Ping(ctx context.Context) error
	// Close releases the source's connections.
	Close() error
}

// AnswerError is a directory's answer that names no usable backend: a
// value that is neither a backend name nor a host, or several entries for
// one user. The login fails as temporary (the user exists somewhere), but
// the directory itself is up.
type AnswerError struct {
	// Msg says what was wrong, quoting the value.
	Msg string
}

func (e *AnswerError) Error() string { return e.Msg }

// ConfigError is a bad field of an SQLConfig or LDAPConfig. Field is the
// field's name (URL, Query, Filter, BaseDN, BindDN, BindPassword, CAFile),
// so that the caller can name the setting the operator must fix.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

func configError(field string, err error) error { return &ConfigError{Field: field, Err: err} }

// Directory is the Selector of a Source with a cache in front: answers are
// kept for TTL (no-such-user answers for NegativeTTL), coalesced so that
// concurrent lookups of one user ask the source once, and, when the
// source fails, a known user's last answer is served for up to Stale past
// its TTL (see Trace) instead of a temporary failure. It also keeps the
// source's up/down state, from lookups and from Run's probes.
//
// No-such-user answers are never served stale: a user the directory did
// not know a minute ago might be new, and serving "unknown" would send
// them down the chain to another backend; a temporary failure is right.
type Directory struct {
	// Name is the rule's name (RuleSQL, RuleLDAP), in the state and the
	// trace.
	Name string
	// Source is the directory asked on a cache miss.
	Source Source
	// TTL is how long an answer naming a backend is used without asking
	// again; zero means DefaultDirectoryTTL, negative turns caching off.
	TTL time.Duration
	// NegativeTTL is the same for no-such-user answers, shorter so that a
	// new user is seen soon; zero means DefaultDirectoryNegativeTTL,
	// negative turns their caching off.
	NegativeTTL time.Duration
	// Stale is how long past its TTL an answer may be served while the
	// source fails; zero means DefaultDirectoryStale, negative never.
	Stale time.Duration
	// Size bounds the cache (least recently used answers go first); zero
	// means DefaultDirectorySize.
	Size int
	// OnChange, when set, is called when the source turns up or down, and
	// at its first result, with the error that made it down.
	OnChange func(name string, up bool, err error)

	// now replaces the clock in tests.
	now func() time.Time

	initOnce sync.Once
	cache    *lru.Cache[string, dirEntry]
	flights  singleflight.Group

	mu    sync.Mutex
	state DirectoryState
}

// dirEntry is a cached answer: a nil backend is "no such user".
type dirEntry struct {
	backend *Backend
	fetched time.Time
}

// DirectoryState is a directory's last known health.
type DirectoryState struct {
	// Name is the directory's rule name.
	Name string
	// Known is false until the first lookup or probe has finished.
	Known bool
	// Up is true when the last lookup or probe got an answer; a directory
	// not asked yet counts as up.
	Up bool
	// Err is what made the directory down (no password in it).
	Err error
	// Since is when Up last changed.
	Since time.Time
}

// StaleAnswer records that a Directory served an expired answer because
// its source failed.
type StaleAnswer struct {
	// Directory is the directory's rule name.
	Directory string
	// Age is how old the answer was.
	Age time.Duration
	// Cause is the source's failure.
	Cause error
}

// Trace collects what the log line of one login should say about its
// directory lookups. Put one in the context with WithTrace before routing
// and read it afterwards; it is for one login, not for concurrent use.
type Trace struct {
	// Stale lists the answers served stale, in the order served.
	Stale []StaleAnswer
}

type traceKey struct{}

// WithTrace returns a context whose directory lookups record into t.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// traceFrom returns the context's Trace, or nil.
func traceFrom(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

func (d *Directory) init() {
	d.initOnce.Do(func() {
		size := d.Size
		if size <= 0 {
			size = DefaultDirectorySize
		}
		d.cache, _ = lru.New[string, dirEntry](size) // errors only for size <= 0
		d.state = DirectoryState{Name: d.Name, Up: true}
	})
}

// durations returns the effective TTL, negative TTL and stale window;
// zero means off.
func (d *Directory) durations() (ttl, negTTL, stale time.Duration) {
	pick := func(v, def time.Duration) time.Duration {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 0
		}
		return v
	}
	return pick(d.TTL, DefaultDirectoryTTL), pick(d.NegativeTTL, DefaultDirectoryNegativeTTL), pick(d.Stale, DefaultDirectoryStale)
}

func (d *Directory) clock() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

// Select returns the user's backend from the cache or the source. A user
// name no directory could hold (empty, over-long, not UTF-8, control
// characters) is no such user, without asking.
func (d *Directory) Select(ctx context.Context, user string) (*Backend, error) {
	if !plausibleUser(user) {
		return nil, nil
	}
	d.init()
	ttl, negTTL, stale := d.durations()
	now := d.clock()
	e, cached := d.cache.Get(user)
	if cached {
		age := now.Sub(e.fetched)
		if e.backend != nil && age < ttl || e.backend == nil && age < negTTL {
			return e.backend, nil
		}
	}
	b, err := d.fetch(ctx, user)
	if err == nil {
		return b, nil
	}
	var bad *AnswerError
	if cached && e.backend != nil && !errors.As(err, &bad) && ctx.Err() == nil {
		if age := now.Sub(e.fetched); age < ttl+stale {
			if t := traceFrom(ctx); t != nil {
				t.Stale = append(t.Stale, StaleAnswer{Directory: d.Name, Age: age, Cause: err})
			}
			return e.backend, nil
		}
	}
	return nil, fmt.Errorf("directory %s: %w", d.Name, err)
}

// fetch asks the source, once for all concurrent callers for user, and
// caches the answer. The lookup does not end when the first caller gives
// up (the source bounds it): the others still want it.
func (d *Directory) fetch(ctx context.Context, user string) (*Backend, error) {
	ch := d.flights.DoChan(user, func() (any, error) {
		b, err := d.Source.Select(context.WithoutCancel(ctx), user)
		d.record(err)
		if err == nil {
			d.cache.Add(user, dirEntry{backend: b, fetched: d.clock()})
		}
		return b, err
	})
	select {
	case r := <-ch:
		b, _ := r.Val.(*Backend)
		return b, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// record updates the state from a lookup's or probe's outcome. An
// AnswerError is an answer, so the directory is up.
func (d *Directory) record(err error) {
	var bad *AnswerError
	up := err == nil || errors.As(err, &bad)
	if up {
		err = nil
	}
	d.mu.Lock()
	changed := !d.state.Known || d.state.Up != up
	d.state.Known = true
	d.state.Err = err
	if changed {
		d.state.Up = up
		d.state.Since = d.clock()
	}
	onChange := d.OnChange
	d.mu.Unlock()
	if changed && onChange != nil {
		onChange(d.Name, up, err)
	}
}

// State returns the directory's last known health.
func (d *Directory) State() DirectoryState {
	d.init()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Probe pings the source once and records the outcome.
func (d *Directory) Probe(ctx context.Context) error {
	d.init()
	err := d.Source.Ping(ctx)
	d.record(err)
	return err
}

// Run probes the source every interval (5s when zero) until ctx ends, so
// that /readyz and the metrics follow the directory while nobody logs in.
func (d *Directory) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		d.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close closes the source.
func (d *Directory) Close() error { return d.Source.Close() }

// maxDirectoryUser bounds the user names sent to a directory: an address
// is at most 254 bytes (RFC 5321), and a login name is not longer.
const maxDirectoryUser = 320

// plausibleUser reports whether user could be in a directory. Anything
// else is no such user, decided here, because a database answers a NUL
// byte or invalid UTF-8 with an error, and an error would be a temporary
// failure that an attacker could cause at will.
func plausibleUser(user string) bool {
	if user == "" || len(user) > maxDirectoryUser || !utf8.ValidString(user) {
		return false
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
