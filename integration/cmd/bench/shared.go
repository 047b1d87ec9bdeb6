package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imapgate/imapgate/auth/state"
)

// Addresses of the shared-state figures (127.0.40.0/24 is theirs).
const (
	ipSharedRedis  = "127.0.40.61" // the store of the shared imapgates
	ipSizingRedis  = "127.0.40.62" // an empty store, for the sizing figure
	ipSharedWarm   = "127.0.40.53" // imapgate, cache warm, shared state
	ipSharedCold   = "127.0.40.54" // imapgate, cache off, shared state
	sizingUsers    = 100_000
	sizingOwners   = 20_000
	sizingParallel = 16
)

// sharedFigures compare imapgate with shared state (a Redis) and with
// in-process state.
type sharedFigures struct {
	cachedShared, cachedLocal []float64 // req/s, one per round
	p50Shared, p50Local       []float64 // ms, check latency c=1, one per round
	p99Shared, p99Local       []float64
	bytesPerUser              float64 // store memory per user with a wrong password from a network of its own
	bytesPerOwner             float64 // per owner mark
}

// shared: the cached answer (wrk, as cachedAnswer) and the check latency
// (c=1, cache off) of imapgate sharing its limits through Redis, side by
// side with the in-process imapgates of the other figures; and what the
// store holds per tracked user.
func (b *bench) shared(ctx context.Context, r *report) error {
	rd, err := b.env.StartRedis(ctx, "redis-bench", ipSharedRedis, 6379)
	if err != nil {
		return err
	}
	defer rd.Close()
	for _, v := range []struct{ name, ip, ttl string }{{"warm", ipSharedWarm, "24h"}, {"cold", ipSharedCold, "0"}} {
		settings := map[string]string{
			"IMAPGATE_BACKENDS":        "bench=" + ipBackend,
			"IMAPGATE_DEFAULT_BACKEND": "bench",
			"IMAPGATE_CACHE_TTL":       v.ttl,
			"IMAPGATE_STATE_URL":       rd.URL(),
		}
		for k, val := range b.cfg.extraEnv {
			settings[k] = val
		}
		p, err := b.env.StartImapgate(ctx, "imapgate-shared-"+v.name, v.ip+":9180", settings)
		if err != nil {
			return err
		}
		defer p.Stop(15 * time.Second)
	}
	var f sharedFigures
	if err := b.sharedCached(ctx, &f); err != nil {
		return err
	}
	if err := b.sharedLatency(&f); err != nil {
		return err
	}
	if err := b.sizing(ctx, &f); err != nil {
		return err
	}
	r.shared = &f
	return nil
}

// sharedCached runs wrk on the shared and the in-process warm imapgate,
// interleaved.
func (b *bench) sharedCached(ctx context.Context, f *sharedFigures) error {
	a := b.accounts[0]
	var scripts [2]string
	for i, ip := range []string{ipSharedWarm, ipWarm} {
		if err := authOK(ip+":9180", authRequestBytes(ip, a.User, a.Password)); err != nil {
			return err
		}
		s, err := wrkScript(b.env.Dir, "cached-"+ip, authRequestBytes(ip, a.User, a.Password))
		if err != nil {
			return err
		}
		scripts[i] = s
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		for i, ip := range []string{ipSharedWarm, ipWarm} {
			res, err := runWrk(ctx, scripts[i], "http://"+ip+":9180/mail/auth.php", b.cfg.wrkThreads, b.cfg.wrkConns, b.cfg.wrkDuration)
			if err != nil {
				return err
			}
			into := []*[]float64{&f.cachedShared, &f.cachedLocal}[i]
			*into = append(*into, res.rps)
			logf("shared state, cached answer round %d/%d: %s %8.0f req/s", round, b.cfg.rounds, []string{"shared", "local"}[i], res.rps)
		}
	}
	return nil
}

// sharedLatency measures the cache-miss check at c=1 on the shared and
// the in-process cold imapgate, interleaved.
func (b *bench) sharedLatency(f *sharedFigures) error {
	for round := 1; round <= b.cfg.rounds; round++ {
		for i, ip := range []string{ipSharedCold, ipCold} {
			l := closedLoop(1, b.cfg.latDuration, b.cfg.latMax, func(w, n int) error {
				a := b.userFor(w, 1, n)
				return authOK(ip+":9180", authRequestBytes(ip, a.User, a.Password))
			})
			if l.fails > 0 || len(l.lat) == 0 {
				return fmt.Errorf("check latency on %s: %d failed, first: %v", ip, l.fails, l.firstEr)
			}
			p50, p99 := ms(percentile(l.lat, 50)), ms(percentile(l.lat, 99))
			if i == 0 {
				f.p50Shared, f.p99Shared = append(f.p50Shared, p50), append(f.p99Shared, p99)
			} else {
				f.p50Local, f.p99Local = append(f.p50Local, p50), append(f.p99Local, p99)
			}
			logf("shared state, check latency round %d/%d: %s p50 %.2f p99 %.2f ms", round, b.cfg.rounds, []string{"shared", "local"}[i], p50, p99)
		}
	}
	return nil
}

// sizing fills an empty Redis through the store's own code: 100,000
// users each with one wrong password from a network of its own (a pair,
// a user and a network count each), then 20,000 owner marks, and reads
// the server's used_memory after each.
func (b *bench) sizing(ctx context.Context, f *sharedFigures) error {
	rd, err := b.env.StartRedis(ctx, "redis-sizing", ipSizingRedis, 6379)
	if err != nil {
		return err
	}
	defer rd.Close()
	store, err := state.NewRedis(state.RedisConfig{URL: rd.URL(), Limits: state.DefaultLimits, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer store.Close()
	client := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer client.Close()
	before, err := usedMemory(ctx, client)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for w := range sizingParallel {
		wg.Go(func() {
			for i := w; i < sizingUsers; i += sizingParallel {
				user, net := fmt.Sprintf("user%06d@example.org", i), sizingNet(i)
				store.Failure(ctx, state.Attempt{User: user, Network: net, Fingerprint: store.Fingerprint(user, "wrong")})
			}
		})
	}
	wg.Wait()
	afterFailures, err := usedMemory(ctx, client)
	if err != nil {
		return err
	}
	// Owner marks go to the server after the answer, through a bounded
	// queue: in batches, each waited for.
	keys, _ := client.DBSize(ctx).Result()
	for i := 0; i < sizingOwners; {
		for end := i + 2000; i < end; i++ {
			store.Success(ctx, fmt.Sprintf("owner%06d@example.org", i), sizingNet(i))
		}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if n, _ := client.DBSize(ctx).Result(); n >= keys+int64(i) {
				break
			}
		}
	}
	afterOwners, err := usedMemory(ctx, client)
	if err != nil {
		return err
	}
	f.bytesPerUser = float64(afterFailures-before) / sizingUsers
	f.bytesPerOwner = float64(afterOwners-afterFailures) / sizingOwners
	logf("shared state, sizing: %.0f bytes per user with a wrong password, %.0f per owner mark", f.bytesPerUser, f.bytesPerOwner)
	return nil
}

// sizingNet is the i-th user's network, a /24 of its own.
func sizingNet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 0}), 24)
}

// usedMemory is Redis's INFO memory used_memory.
func usedMemory(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no used_memory in INFO memory")
}
