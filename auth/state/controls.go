package state

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Drain is an operator's drain of a backend: new logins routed to it are
// answered "try later", or sent to the backend To instead.
type Drain struct {
	Backend string `json:"backend"`
	// To, when set, names the backend that takes the drained one's logins.
	To string `json:"to,omitempty"`
	// By names the operator (the admin token's name).
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
}

// Hold is an operator's hold on one user (while the mailbox moves, say):
// nginx is told to wait Wait seconds and ask again.
type Hold struct {
	// User is the user as the limits count it (case folded).
	User  string    `json:"user"`
	Wait  int       `json:"wait"`
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
}

// Controls keeps the operator's standing instructions: drained backends
// and held users. Drained and Held are asked on every login, so they
// answer from memory without a round trip; a shared implementation
// (Redis) changes every imapgate's view when one of them is told.
type Controls interface {
	// Drained reports whether backend is drained, and how.
	Drained(backend string) (Drain, bool)
	// Held reports whether user (case folded) is held.
	Held(user string) (Hold, bool)
	// Drains and Holds list every drain and hold, sorted by name.
	Drains() []Drain
	Holds() []Hold
	// SetDrain drains d.Backend (again, if it is drained already).
	SetDrain(ctx context.Context, d Drain) error
	// Undrain ends a drain; existed says there was one.
	Undrain(ctx context.Context, backend string) (existed bool, err error)
	// SetHold holds h.User.
	SetHold(ctx context.Context, h Hold) error
	// Unhold ends a hold; existed says there was one.
	Unhold(ctx context.Context, user string) (existed bool, err error)
}

// ErrLocalOnly says that a change could be made in this process only:
// the shared store cannot be reached. The change stands here until the
// store answers again, when the store's view replaces it.
var ErrLocalOnly = errors.New("state store unreachable: changed in this process only")

// HoldUser is the key a user is held under: folded as the limits and the
// selectors fold it.
func HoldUser(user string) string { return strings.ToLower(user) }

// controlSet is one immutable view of the controls: a login reads it
// without a lock, a change replaces it whole (changes are rare).
type controlSet struct {
	drains map[string]Drain
	holds  map[string]Hold
}

// LocalControls is Controls kept in this process. Its zero value holds
// nothing and is ready to use.
type LocalControls struct {
	mu sync.Mutex // orders the changes
	// gen counts the changes made here, so that a shared store's view
	// read before one of them does not undo it (replaceIf).
	gen uint64
	cur atomic.Pointer[controlSet]
}

var _ Controls = (*LocalControls)(nil)

func (c *LocalControls) view() *controlSet {
	if v := c.cur.Load(); v != nil {
		return v
	}
	return &controlSet{}
}

// change replaces the view with a copy that edit has changed.
func (c *LocalControls) change(edit func(*controlSet)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.view()
	next := &controlSet{drains: maps.Clone(old.drains), holds: maps.Clone(old.holds)}
	if next.drains == nil {
		next.drains = make(map[string]Drain)
	}
	if next.holds == nil {
		next.holds = make(map[string]Hold)
	}
	edit(next)
	c.gen++
	c.cur.Store(next)
}

// generation returns the count of changes made here so far.
func (c *LocalControls) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// replaceIf installs drains and holds as the whole view (a shared store's,
// loaded) unless a change was made here since generation gen: that
// change's own announcement brings a newer view.
func (c *LocalControls) replaceIf(gen uint64, drains map[string]Drain, holds map[string]Hold) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.cur.Store(&controlSet{drains: drains, holds: holds})
	}
}

// Drained implements Controls.
func (c *LocalControls) Drained(backend string) (Drain, bool) {
	d, ok := c.view().drains[backend]
	return d, ok
}

// Held implements Controls.
func (c *LocalControls) Held(user string) (Hold, bool) {
	v := c.view()
	if len(v.holds) == 0 {
		// The usual case: no fold of the user needed.
		return Hold{}, false
	}
	h, ok := v.holds[HoldUser(user)]
	return h, ok
}

// Drains implements Controls.
func (c *LocalControls) Drains() []Drain {
	v := c.view()
	out := slices.Collect(maps.Values(v.drains))
	slices.SortFunc(out, func(a, b Drain) int { return strings.Compare(a.Backend, b.Backend) })
	return out
}

// Holds implements Controls.
func (c *LocalControls) Holds() []Hold {
	v := c.view()
	out := slices.Collect(maps.Values(v.holds))
	slices.SortFunc(out, func(a, b Hold) int { return strings.Compare(a.User, b.User) })
	return out
}

// SetDrain implements Controls.
func (c *LocalControls) SetDrain(_ context.Context, d Drain) error {
	c.change(func(s *controlSet) { s.drains[d.Backend] = d })
	return nil
}

// Undrain implements Controls.
func (c *LocalControls) Undrain(_ context.Context, backend string) (bool, error) {
	_, existed := c.Drained(backend)
	c.change(func(s *controlSet) { delete(s.drains, backend) })
	return existed, nil
}

// SetHold implements Controls.
func (c *LocalControls) SetHold(_ context.Context, h Hold) error {
	h.User = HoldUser(h.User)
	c.change(func(s *controlSet) { s.holds[h.User] = h })
	return nil
}

// Unhold implements Controls.
func (c *LocalControls) Unhold(_ context.Context, user string) (bool, error) {
	user = HoldUser(user)
	_, existed := c.Held(user)
	c.change(func(s *controlSet) { delete(s.holds, user) })
	return existed, nil
}
