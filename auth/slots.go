package auth

import (
	"context"
	"net/netip"
	"sync"
)

// checkSlots bounds the checks in flight on each backend. A mail server
// takes logins one process at a time (Dovecot: about 10 ms each, some 125
// a second on two cores), so more checks at once than it has processes
// only queue inside it, and a burst of logins (a reconnect storm after an
// outage) would otherwise open as many connections to it as there are
// clients. Waiting here costs imapgate a goroutine, not a backend
// connection, and bounds imapgate's own memory too.
//
// Each client network also has a share of each backend's slots: a check
// the backend holds for seconds (Dovecot's auth penalty on a guesser's
// address) keeps its slot that long, and one network's guesses must not
// take every slot from everyone else's logins.
type checkSlots struct {
	perBackend, perNetwork int

	mu     sync.Mutex
	slots  map[string]chan struct{}
	shares map[shareKey]*share
}

// shareKey is one network's share of one backend's slots.
type shareKey struct {
	backend string
	network netip.Prefix
}

// share is a network's slots on a backend and how many checks hold or
// wait for them; it is dropped when none does, so that a flood of
// networks leaves nothing behind.
type share struct {
	slots chan struct{}
	users int
}

func newCheckSlots(perBackend, perNetwork int) *checkSlots {
	return &checkSlots{perBackend: perBackend, perNetwork: perNetwork,
		slots: make(map[string]chan struct{}), shares: make(map[shareKey]*share)}
}

// acquire waits for a slot on backend within network's share (the zero
// prefix has no share: trusted networks), or for ctx to end. A nil
// checkSlots, or one with no bound, never waits.
func (s *checkSlots) acquire(ctx context.Context, backend string, network netip.Prefix) (release func(), err error) {
	if s == nil {
		return func() {}, nil
	}
	leave, err := s.enterShare(ctx, shareKey{backend, network})
	if err != nil {
		return nil, err
	}
	if s.perBackend <= 0 {
		return leave, nil
	}
	s.mu.Lock()
	ch, ok := s.slots[backend]
	if !ok {
		ch = make(chan struct{}, s.perBackend)
		s.slots[backend] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}

// enterShare waits for a slot of k's share.
func (s *checkSlots) enterShare(ctx context.Context, k shareKey) (leave func(), err error) {
	if s.perNetwork <= 0 || !k.network.IsValid() {
		return func() {}, nil
	}
	s.mu.Lock()
	sh, ok := s.shares[k]
	if !ok {
		sh = &share{slots: make(chan struct{}, s.perNetwork)}
		s.shares[k] = sh
	}
	sh.users++
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		if sh.users--; sh.users == 0 {
			delete(s.shares, k)
		}
		s.mu.Unlock()
	}
	select {
	case sh.slots <- struct{}{}:
		return func() { <-sh.slots; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}
