package http1

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DropReason says why the server ended a connection on its own.
type DropReason uint8

// The reasons a connection is dropped.
const (
	// DropRefused: Server.Accept refused the peer; nothing was read.
	DropRefused DropReason = iota + 1
	// DropSlow: the request head did not arrive within ReadTimeout.
	DropSlow
	// DropEvicted: cut off at MaxConns to make room for a new
	// connection, being the one that had waited longest for a head.
	DropEvicted
	// DropFull: at MaxConns with every connection busy on a request, so
	// the new one was closed unread.
	DropFull
)

var dropNames = [...]string{
	DropRefused: "refused",
	DropSlow:    "slow",
	DropEvicted: "evicted",
	DropFull:    "full",
}

// String names the reason as metrics label it: refused, slow, evicted or
// full.
func (r DropReason) String() string {
	if int(r) < len(dropNames) && dropNames[r] != "" {
		return dropNames[r]
	}
	return "unknown"
}

// describe is the reason as the log says it.
func (r DropReason) describe() string {
	switch r {
	case DropRefused:
		return "peer refused at accept"
	case DropSlow:
		return "request head not read in time"
	case DropEvicted:
		return "connection limit reached: cut off the connection waiting longest for its request"
	case DropFull:
		return "connection limit reached and every connection busy: new connection closed"
	}
	return "unknown"
}

// dropLogEvery is the least time between two log lines of one reason: a
// flood of slow clients must not become a flood of log lines.
const dropLogEvery = 10 * time.Second

// tracker counts the open connections and keeps those waiting for a
// request head in the order they began to wait, oldest first, so that at
// MaxConns the one to cut off is found at once. It never allocates: the
// list runs through the pooled conns.
type tracker struct {
	mu         sync.Mutex
	open       int
	head, tail *conn // waiting for a head, oldest first

	logMu  sync.Mutex
	logged [len(dropNames)]time.Time
	since  [len(dropNames)]int // drops not logged since the last line
}

// admit counts a new connection. At limit (when positive) it makes room
// by cutting off the connection that has waited longest for its head,
// and reports false when there is none to cut.
func (t *tracker) admit(limit int) (evicted net.Addr, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if limit > 0 && t.open >= limit {
		c := t.head
		if c == nil {
			return nil, false
		}
		t.unlink(c)
		c.evicted = true
		t.open--
		// Under the lock, so that c cannot have gone back to the pool
		// in between.
		evicted = c.nc.RemoteAddr()
		c.nc.Close()
	}
	t.open++
	return evicted, true
}

// wait marks c as waiting for a request head (true) or busy (false).
func (t *tracker) wait(c *conn, waiting bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.evicted {
		return
	}
	if waiting && !c.waiting {
		c.prev, c.next = t.tail, nil
		if t.tail != nil {
			t.tail.next = c
		} else {
			t.head = c
		}
		t.tail = c
		c.waiting = true
	} else if !waiting && c.waiting {
		t.unlink(c)
	}
}

// done uncounts c, which is closing, and reports whether it had been cut
// off to make room.
func (t *tracker) done(c *conn) (evicted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	evicted = c.evicted
	if !evicted {
		t.unlink(c)
		t.open--
	}
	c.evicted = false
	return evicted
}

// unlink takes c off the waiting list, if it is on it; t.mu is held.
func (t *tracker) unlink(c *conn) {
	if !c.waiting {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		t.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		t.tail = c.prev
	}
	c.prev, c.next, c.waiting = nil, nil, false
}

// Open returns the number of connections the server has open.
func (s *Server) Open() int {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	return s.conns.open
}

// dropped reports a connection the server ended on its own: to OnDrop,
// and to the log, at most one line per reason every dropLogEvery, which
// counts the ones in between.
func (s *Server) dropped(why DropReason, remote net.Addr) {
	if s.OnDrop != nil {
		s.OnDrop(why)
	}
	t := &s.conns
	t.logMu.Lock()
	now := time.Now()
	if now.Sub(t.logged[why]) < dropLogEvery {
		t.since[why]++
		t.logMu.Unlock()
		return
	}
	more, prev := t.since[why], t.logged[why]
	t.logged[why], t.since[why] = now, 0
	t.logMu.Unlock()
	attrs := []any{"reason", why.describe(), "remote", addrString(remote), "open", s.Open()}
	if more > 0 {
		// The drops for the same reason since the last line.
		attrs = append(attrs, "more", more, "in", now.Sub(prev).Round(time.Second).String())
	}
	s.logger().Log(context.Background(), slog.LevelWarn, "connection dropped", attrs...)
}

// addrString is a's text, or "" for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
