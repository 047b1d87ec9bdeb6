package state

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures a Redis store.
type RedisConfig struct {
	// URL is redis://[user:password@]host[:port][/db] or rediss://… (TLS).
	URL string
	// Limits are the limits, the same on every imapgate.
	Limits Limits
	// Timeout bounds one round trip: a store slower than this is as good
	// as down. 0 means DefaultRedisTimeout.
	Timeout time.Duration
	// OnChange, when set, is told each time the store becomes unreachable
	// (shared false, with the error) and reachable again (shared true).
	OnChange func(shared bool, err error)
}

// DefaultRedisTimeout bounds a round trip to the store when
// RedisConfig.Timeout is zero: a few times what one takes on a LAN, far
// below a backend check.
const DefaultRedisTimeout = 250 * time.Millisecond

// Redis is a Store shared by several imapgates through a Redis or Valkey
// server. Counts, distinct-password sets, checks in flight, blocks and
// owner marks live on the server, changed by scripts that check and count
// in one step; the blocks are also pushed to every imapgate, so that an
// answer from the verified-login cache asks the server nothing.
//
// Every change is also made in a Memory of this process. While the server
// cannot be reached, or is slower than Timeout, that Memory decides
// alone (with the blocks last pushed), so logins are never unlimited nor
// refused for the store's sake; the server is tried again every second,
// and sharing resumes when it answers.
type Redis struct {
	cfg    RedisConfig
	client redis.UniversalClient
	local  *Memory
	shared atomic.Bool
	digest atomic.Pointer[Digester]
	blocks blockView
	// controls is this process's view of the operator's drains and holds.
	controls LocalControls
	// onFlush forgets a user's cached logins here, on a pushed flush.
	onFlush atomic.Pointer[func(user string)]
	jobs    chan func(context.Context)
	stop    context.CancelFunc
	wg      sync.WaitGroup
	// changeMu orders OnChange calls.
	changeMu sync.Mutex
}

func init() {
	// go-redis logs dial failures on its own; the store says once, through
	// OnChange, that it cannot reach the server.
	redis.SetLogger(quiet{})
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// ParseRedisURL checks a store URL. Its error never holds the URL's
// password.
func ParseRedisURL(u string) (*redis.Options, error) {
	opt, err := redis.ParseURL(u)
	if err != nil {
		msg := err.Error()
		if i := strings.Index(u, "@"); i > 0 {
			// Whatever sits before the host may be a password: never echo it.
			msg = strings.ReplaceAll(msg, u[:i], "…")
		}
		return nil, errors.New(msg)
	}
	return opt, nil
}

// NewRedis returns a Redis store for cfg, which must have a URL that
// ParseRedisURL accepts. It tries the server once, for at most Timeout;
// unreachable, it starts on its own Memory. Close stops it.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	opt, err := ParseRedisURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRedisTimeout
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = cfg.Timeout, cfg.Timeout, cfg.Timeout
	opt.MaxRetries = -1 // a store that does not answer at once is down: decide locally
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	r := &Redis{cfg: cfg, client: redis.NewClient(opt), local: NewMemory(cfg.Limits),
		jobs: make(chan func(context.Context), 4096)}
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	if err := r.connect(ctx); err != nil {
		r.change(false, err)
	} else {
		r.change(true, nil)
	}
	r.wg.Add(3)
	go r.watch(ctx)
	go r.subscribe(ctx)
	go r.work(ctx)
	return r, nil
}

// Close stops the store's goroutines and closes its connections.
func (r *Redis) Close() error {
	r.stop()
	r.wg.Wait()
	return r.client.Close()
}

// Shared reports whether the store is shared now (false: deciding on its
// own Memory until the server answers again).
func (r *Redis) Shared() bool { return r.shared.Load() }

// connect loads the fingerprints' key (making it if no imapgate has) and
// the blocks.
func (r *Redis) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*r.cfg.Timeout)
	defer cancel()
	key := make([]byte, 32)
	rand.Read(key)
	if err := r.client.SetNX(ctx, redisKey, key, 0).Err(); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	got, err := r.client.Get(ctx, redisKey).Bytes()
	if err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	r.digest.Store(NewDigester(got))
	if err := r.loadBlocks(ctx); err != nil {
		return err
	}
	return r.loadControls(ctx)
}

// change records a change of state and tells OnChange, once per change.
func (r *Redis) change(shared bool, err error) {
	r.changeMu.Lock()
	defer r.changeMu.Unlock()
	if r.shared.Swap(shared) == shared && r.digest.Load() != nil {
		return
	}
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(shared, err)
	}
}

// fail falls back to the local Memory after err, a failed round trip.
func (r *Redis) fail(err error) {
	if r.shared.Load() {
		r.change(false, err)
	}
}

// watch tries the server every second while it is unreachable, and
// reloads the blocks and the controls every 30 s while it is (a push may
// have been missed during a reconnect).
func (r *Redis) watch(ctx context.Context) {
	defer r.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		switch {
		case !r.shared.Load():
			if err := r.connect(ctx); err == nil {
				r.change(true, nil)
			}
		case n%30 == 0:
			lctx, cancel := context.WithTimeout(ctx, 4*r.cfg.Timeout)
			if err := errors.Join(r.loadBlocks(lctx), r.loadControls(lctx)); err != nil {
				r.fail(err)
			}
			cancel()
		}
	}
}

// work runs the round trips no answer waits for (ends of checks, owner
// marks), one at a time.
func (r *Redis) work(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-r.jobs:
			if r.shared.Load() {
				jctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
				job(jctx)
				cancel()
			}
		}
	}
}

// later queues a round trip; when the queue is full it is dropped (the
// keys it would have changed expire by themselves).
func (r *Redis) later(job func(context.Context)) {
	select {
	case r.jobs <- job:
	default:
	}
}

// Fingerprint implements Store, with the key every imapgate shares (the
// local Memory's own until the server has been reached once).
func (r *Redis) Fingerprint(user, password string) uint64 {
	if d := r.digest.Load(); d != nil {
		return d.Fingerprint(user, password)
	}
	return r.local.Fingerprint(user, password)
}

// opCtx bounds one round trip.
func (r *Redis) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
}

// names are the keys and NAMEs of an attempt's records.
type names struct {
	counts, pending [3]string
	names           [3]string
	owner           string
}

func namesOf(user string, network netip.Prefix) names {
	var n names
	ks := keys(user, network)
	for i, k := range ks[Pair:] {
		n.names[i] = countName(k)
		n.counts[i] = redisPrefix + "c:" + n.names[i]
		n.pending[i] = redisPrefix + "p:" + n.names[i]
	}
	n.owner = redisKeyOf(countKey{Owner, recordKey{user, network}})
	return n
}

func fpString(fp uint64) string { return strconv.FormatUint(fp, 16) }

// limitArgs are the three limits, as the scripts take them.
func (r *Redis) limitArgs() []any {
	l := r.cfg.Limits
	return []any{l.PerPair, l.PerUser, l.PerNetwork}
}
