package auth

import (
	"context"
	"sync"
)

// checkSlots bounds the checks in flight on each backend. A mail server
// takes logins one process at a time (Dovecot: about 10 ms each, some 125
// a second on two cores), so more checks at once than it has processes
// only queue inside it, and a burst of logins (a reconnect storm after an
// outage) would otherwise open as many connections to it as there are
// clients. Waiting here costs imapgate a goroutine, not a backend
// connection, and bounds imapgate's own memory too.
type checkSlots struct {
	perBackend int

	mu    sync.Mutex
	slots map[string]chan struct{}
}

// acquire waits for a slot on backend, or for ctx to end. A nil
// checkSlots, or one with no bound, never waits.
func (s *checkSlots) acquire(ctx context.Context, backend string) (release func(), err error) {
	if s == nil || s.perBackend <= 0 {
		return func() {}, nil
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
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
