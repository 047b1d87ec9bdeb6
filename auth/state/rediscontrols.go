package state

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The operator's controls on the shared store: two hashes, a drain per
// backend and a hold per user, each field's value the control as JSON.
// A change is announced with "c" on redisChannel, on which every imapgate
// reloads both; they are loaded too at every (re)connection and with the
// blocks every 30 s, so a restarted imapgate, or one that missed a push,
// catches up.
const (
	redisDrains = redisPrefix + "drains"
	redisHolds  = redisPrefix + "holds"
	// controlsChanged is the message that makes every imapgate reload.
	controlsChanged = "c"
)

var _ Controls = (*Redis)(nil)

// Drained implements Controls, from this process's view.
func (r *Redis) Drained(backend string) (Drain, bool) { return r.controls.Drained(backend) }

// Held implements Controls, from this process's view.
func (r *Redis) Held(user string) (Hold, bool) { return r.controls.Held(user) }

// Drains implements Controls, from this process's view.
func (r *Redis) Drains() []Drain { return r.controls.Drains() }

// Holds implements Controls, from this process's view.
func (r *Redis) Holds() []Hold { return r.controls.Holds() }

// SetDrain implements Controls: on the server, which tells every
// imapgate, and here.
func (r *Redis) SetDrain(ctx context.Context, d Drain) error {
	err := r.shareControl(ctx, func(p redis.Pipeliner, octx context.Context) {
		p.HSet(octx, redisDrains, d.Backend, mustJSON(d))
	})
	r.controls.SetDrain(ctx, d)
	return err
}

// Undrain implements Controls.
func (r *Redis) Undrain(ctx context.Context, backend string) (bool, error) {
	var del *redis.IntCmd
	err := r.shareControl(ctx, func(p redis.Pipeliner, octx context.Context) { del = p.HDel(octx, redisDrains, backend) })
	existed, _ := r.controls.Undrain(ctx, backend)
	if err == nil {
		// The store's answer is every imapgate's.
		existed = del.Val() > 0
	}
	return existed, err
}

// SetHold implements Controls.
func (r *Redis) SetHold(ctx context.Context, h Hold) error {
	h.User = HoldUser(h.User)
	err := r.shareControl(ctx, func(p redis.Pipeliner, octx context.Context) {
		p.HSet(octx, redisHolds, h.User, mustJSON(h))
	})
	r.controls.SetHold(ctx, h)
	return err
}

// Unhold implements Controls.
func (r *Redis) Unhold(ctx context.Context, user string) (bool, error) {
	user = HoldUser(user)
	var del *redis.IntCmd
	err := r.shareControl(ctx, func(p redis.Pipeliner, octx context.Context) { del = p.HDel(octx, redisHolds, user) })
	existed, _ := r.controls.Unhold(ctx, user)
	if err == nil {
		existed = del.Val() > 0
	}
	return existed, err
}

// shareControl makes a change on the server and announces it, in one
// transaction, before the caller makes it here: a reload that read the
// server before the change then cannot install after it (see
// LocalControls.replaceIf). Unable to, it reports ErrLocalOnly.
func (r *Redis) shareControl(ctx context.Context, change func(p redis.Pipeliner, ctx context.Context)) error {
	if !r.shared.Load() {
		return ErrLocalOnly
	}
	octx, cancel := r.opCtx(ctx)
	defer cancel()
	_, err := r.client.TxPipelined(octx, func(p redis.Pipeliner) error {
		change(p, octx)
		p.Publish(octx, redisChannel, controlsChanged)
		return nil
	})
	if err != nil {
		r.fail(err)
		return fmt.Errorf("%w (%v)", ErrLocalOnly, err)
	}
	return nil
}

// loadControls replaces this process's view with the server's.
func (r *Redis) loadControls(ctx context.Context) error {
	gen := r.controls.generation()
	pipe := r.client.Pipeline()
	drains := pipe.HGetAll(ctx, redisDrains)
	holds := pipe.HGetAll(ctx, redisHolds)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("state store: controls: %w", err)
	}
	r.controls.replaceIf(gen, decodeAll[Drain](drains.Val()), decodeAll[Hold](holds.Val()))
	return nil
}

// reloadControls is loadControls on a push from another imapgate.
func (r *Redis) reloadControls() {
	ctx, cancel := context.WithTimeout(context.Background(), 4*r.cfg.Timeout)
	defer cancel()
	if err := r.loadControls(ctx); err != nil {
		r.fail(err)
	}
}

// decodeAll decodes a hash of JSON values; a value that does not decode
// (written by a later version, say) is left out.
func decodeAll[T any](fields map[string]string) map[string]T {
	out := make(map[string]T, len(fields))
	for k, v := range fields {
		var t T
		if json.Unmarshal([]byte(v), &t) == nil {
			out[k] = t
		}
	}
	return out
}

// mustJSON encodes a control; a Drain or a Hold always encodes.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// flushMessage starts the push that asks every imapgate to forget a
// user's cached logins: "f USER".
const flushMessage = "f"

// OnFlush sets the function a pushed flush calls with the user (the
// login handler's cache is in each process; the store only carries the
// word). Until it is set, pushed flushes are dropped.
func (r *Redis) OnFlush(flush func(user string)) { r.onFlush.Store(&flush) }

// Flush asks every imapgate sharing the store (this one included) to
// forget user's cached logins; ErrLocalOnly when the store cannot be
// reached.
func (r *Redis) Flush(ctx context.Context, user string) error {
	if !r.shared.Load() {
		return ErrLocalOnly
	}
	octx, cancel := r.opCtx(ctx)
	defer cancel()
	if err := r.client.Publish(octx, redisChannel, flushMessage+" "+user).Err(); err != nil {
		r.fail(err)
		return fmt.Errorf("%w (%v)", ErrLocalOnly, err)
	}
	return nil
}

// applyFlush runs a pushed flush.
func (r *Redis) applyFlush(user string) {
	if f := r.onFlush.Load(); f != nil && user != "" {
		(*f)(user)
	}
}
