package state

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// blockView is what this process knows of the counts at their limit on
// the shared store: pushed by the server, learnt from this process's own
// failures, reloaded on every (re)connection. It lets Blocked answer
// without a round trip.
type blockView struct {
	mu sync.RWMutex
	m  map[countKey]time.Time // count → when its block ends, by this clock
}

func (v *blockView) set(k countKey, until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[countKey]time.Time)
	}
	v.m[k] = until
}

func (v *blockView) lift(k countKey) {
	// Every successful login lifts its pair: look before taking the
	// write lock, which would serialise them all.
	v.mu.RLock()
	_, ok := v.m[k]
	v.mu.RUnlock()
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, k)
}

func (v *blockView) replace(m map[countKey]time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m = m
}

// has reports whether k is blocked at now.
func (v *blockView) has(k countKey, now time.Time) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	until, ok := v.m[k]
	return ok && now.Before(until)
}

// empty reports whether no block is known, the usual case.
func (v *blockView) empty() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.m) == 0
}

// loadBlocks replaces the view with the server's index of blocks.
func (r *Redis) loadBlocks(ctx context.Context) error {
	res, err := blocksScript.Run(ctx, r.client, []string{redisBlocks}).StringSlice()
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return errors.New("state store: no time in the blocks' answer")
	}
	serverNow, _ := strconv.ParseInt(res[0], 10, 64)
	now := time.Now()
	m := make(map[countKey]time.Time)
	for i := 1; i+1 < len(res); i += 2 {
		k, ok := parseName(res[i])
		end, err := strconv.ParseFloat(res[i+1], 64)
		if ok && err == nil {
			m[k] = now.Add(time.Duration(int64(end)-serverNow) * time.Millisecond)
		}
	}
	r.blocks.replace(m)
	return nil
}

// subscribe applies the blocks and lifts the server pushes: "b TTL NAME"
// (blocked for TTL ms) and "u NAME" (lifted), reloads the operator's
// controls on "c" (changed), and forgets a user's cached logins on
// "f USER".
func (r *Redis) subscribe(ctx context.Context) {
	defer r.wg.Done()
	ps := r.client.Subscribe(ctx, redisChannel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err == nil {
		// A change made between connect's load and the subscription
		// would otherwise wait for the next reload.
		r.reloadControls()
	}
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			r.apply(msg.Payload)
		}
	}
}

// apply applies one pushed message.
func (r *Redis) apply(msg string) {
	op, rest, _ := strings.Cut(msg, " ")
	switch op {
	case "b":
		ttl, name, _ := strings.Cut(rest, " ")
		ms, err := strconv.ParseInt(ttl, 10, 64)
		if k, ok := parseName(name); ok && err == nil {
			r.blocks.set(k, time.Now().Add(time.Duration(ms)*time.Millisecond))
		}
	case "u":
		if k, ok := parseName(rest); ok {
			r.blocks.lift(k)
			r.local.Lift(context.Background(), k.kind, k.user, k.network)
		}
	case controlsChanged:
		r.reloadControls()
	case flushMessage:
		r.applyFlush(rest)
	}
}

// Blocked implements Store: from the local Memory and the blocks pushed,
// without a round trip, except to learn whether a user or network that
// is locked out logs in from the user's own network (the owner marks are
// not pushed).
func (r *Redis) Blocked(ctx context.Context, user string, network netip.Prefix) Kind {
	k := r.local.Blocked(ctx, user, network)
	if k == 0 && !r.blocks.empty() {
		ks := keys(user, network)
		now := time.Now()
		for _, kind := range []Kind{Pair, User, Network} {
			if r.blocks.has(ks[kind], now) {
				k = kind
				break
			}
		}
	}
	if (k == User || k == Network) && r.isOwner(ctx, user, network) {
		return 0
	}
	return k
}

// isOwner asks the local Memory, then the server, whether user has
// logged in from network. Unable to ask, it says no: the lock on the user
// or network stands.
func (r *Redis) isOwner(ctx context.Context, user string, network netip.Prefix) bool {
	if r.local.isOwner(user, network) {
		return true
	}
	if !r.shared.Load() {
		return false
	}
	octx, cancel := r.opCtx(ctx)
	defer cancel()
	n, err := r.client.Exists(octx, redisKeyOf(countKey{Owner, recordKey{user, network}})).Result()
	if err != nil {
		r.fail(err)
		return false
	}
	return n == 1
}

// Begin implements Store: the server decides while it answers (and the
// local Memory may refuse too), the local Memory alone otherwise; an
// admitted check is counted in flight in both.
func (r *Redis) Begin(ctx context.Context, a Attempt, deadline time.Time) Kind {
	if r.shared.Load() {
		// The local Memory knows what this process saw, should the store
		// have lost it (a restart without persistence): the stricter wins.
		if k := r.local.refuses(a); k != 0 {
			return k
		}
		ttl := time.Until(deadline)
		if deadline.IsZero() || ttl <= 0 {
			ttl = time.Minute
		}
		n := namesOf(a.User, a.Network)
		keys := []string{n.counts[0], n.counts[1], n.counts[2], n.pending[0], n.pending[1], n.pending[2], n.owner}
		octx, cancel := r.opCtx(ctx)
		res, err := beginScript.Run(octx, r.client, keys, append([]any{fpString(a.Fingerprint)}, append(r.limitArgs(), ttl.Milliseconds())...)...).Int()
		cancel()
		if err == nil {
			if res == 0 {
				r.local.admitted(a)
			}
			return Kind(res)
		}
		r.fail(err)
	}
	return r.local.Begin(ctx, a, deadline)
}

// End implements Store; the server hears of it after the answer.
func (r *Redis) End(ctx context.Context, a Attempt) {
	r.local.End(ctx, a)
	if !r.shared.Load() {
		return
	}
	n := namesOf(a.User, a.Network)
	r.later(func(ctx context.Context) {
		if err := endScript.Run(ctx, r.client, n.pending[:], fpString(a.Fingerprint)).Err(); err != nil {
			r.fail(err)
		}
	})
}

// Failure implements Store: counted on the server (which pushes any
// block it makes) and in the local Memory.
func (r *Redis) Failure(ctx context.Context, a Attempt) int {
	pair := r.local.Failure(ctx, a)
	if !r.shared.Load() {
		return pair
	}
	n := namesOf(a.User, a.Network)
	keys := []string{n.counts[0], n.counts[1], n.counts[2], n.pending[0], n.pending[1], n.pending[2], redisBlocks}
	args := append([]any{fpString(a.Fingerprint)}, r.limitArgs()...)
	args = append(args, r.cfg.Limits.Window.Milliseconds(), redisChannel, n.names[0], n.names[1], n.names[2])
	octx, cancel := r.opCtx(ctx)
	defer cancel()
	res, err := failureScript.Run(octx, r.client, keys, args...).Int64Slice()
	if err != nil || len(res) != 6 {
		r.fail(errors.Join(err, errors.New("state store: unexpected answer to a failure")))
		return pair
	}
	r.local.raise(a, [3]int{int(res[0]), int(res[1]), int(res[2])})
	ks := keys3(a.User, a.Network)
	for i, blocked := range res[3:] {
		if blocked == 1 {
			r.blocks.set(ks[i], time.Now().Add(r.cfg.Limits.Window))
		}
	}
	return int(res[0])
}

func keys3(user string, network netip.Prefix) [3]countKey {
	ks := keys(user, network)
	return [3]countKey{ks[Pair], ks[User], ks[Network]}
}

// ownerRefresh is how often a success renews the shared owner mark of one
// user and network (and clears the pair's shared count): more often only
// costs round trips.
const ownerRefresh = time.Minute

// Success implements Store; the server hears of it after the answer, at
// most once per ownerRefresh for one user and network.
func (r *Redis) Success(ctx context.Context, user string, network netip.Prefix) {
	since := r.local.ownerSince(user, network)
	r.local.Success(ctx, user, network)
	r.blocks.lift(countKey{Pair, recordKey{user, network}})
	if !r.shared.Load() || time.Since(since) < ownerRefresh {
		return
	}
	n := namesOf(user, network)
	r.later(func(ctx context.Context) {
		err := successScript.Run(ctx, r.client, []string{n.counts[0], n.owner, redisBlocks},
			r.cfg.Limits.Remember.Milliseconds(), redisChannel, n.names[0]).Err()
		if err != nil {
			r.fail(err)
		}
	})
}

// Records implements Store, from the server (every imapgate's records);
// while it is unreachable, from the local Memory, with the error.
func (r *Redis) Records(ctx context.Context) ([]Record, error) {
	if !r.shared.Load() {
		recs, _ := r.local.Records(ctx)
		return recs, fmt.Errorf("%w: these are this process's records only", ErrLocalOnly)
	}
	var out []Record
	for _, pattern := range []string{redisPrefix + "c:*", redisPrefix + "o:*"} {
		iter := r.client.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			rec, err := r.record(ctx, iter.Val())
			if err != nil {
				return out, err
			}
			if rec.Kind != 0 {
				out = append(out, rec)
			}
		}
		if err := iter.Err(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// record reads the record at key (zero Kind if it is gone or not one).
func (r *Redis) record(ctx context.Context, key string) (Record, error) {
	name := strings.TrimPrefix(key, redisPrefix+"c:")
	if o, ok := strings.CutPrefix(key, redisPrefix+"o:"); ok {
		name = "owner:" + o
	}
	k, ok := parseName(name)
	if !ok {
		return Record{}, nil
	}
	pipe := r.client.Pipeline()
	ttl := pipe.PTTL(ctx, key)
	var card *redis.IntCmd
	if k.kind != Owner {
		card = pipe.SCard(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Record{}, err
	}
	if ttl.Val() <= 0 {
		return Record{}, nil
	}
	rec := Record{Kind: k.kind, User: k.user, Network: k.network, Limit: r.cfg.Limits.limit(k.kind),
		Expires: time.Now().Add(ttl.Val())}
	if card != nil {
		rec.Failures = int(card.Val())
		rec.Blocked = rec.Limit > 0 && rec.Failures >= rec.Limit
	}
	return rec, nil
}

// Lift implements Store: on the server (which tells every imapgate) and
// here.
func (r *Redis) Lift(ctx context.Context, kind Kind, user string, network netip.Prefix) error {
	if err := r.local.Lift(ctx, kind, user, network); err != nil {
		return err
	}
	k := countKey{kind, recordKey{user, network}}
	switch kind {
	case User:
		k.network = netip.Prefix{}
	case Network:
		k.user = ""
	}
	r.blocks.lift(k)
	if !r.shared.Load() {
		return ErrLocalOnly
	}
	name := countName(k)
	octx, cancel := r.opCtx(ctx)
	defer cancel()
	if err := liftScript.Run(octx, r.client, []string{redisKeyOf(k), redisPrefix + "p:" + name, redisBlocks}, redisChannel, name).Err(); err != nil {
		r.fail(err)
		return fmt.Errorf("%w (%v)", ErrLocalOnly, err)
	}
	return nil
}
