package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Flood holds many slow connections open to an HTTP server: each sends
// the start of a request head, then one byte every Interval, and is
// opened again when the server closes it. It is the crowd of slow clients
// a connection cap must survive.
type Flood struct {
	// Target is the server's host:port.
	Target string
	// Sources are the local addresses the connections come from, in turn
	// (several, so that their ephemeral ports do not run out).
	Sources []string
	// Conns is how many connections to hold.
	Conns int
	// Interval is the time between two bytes on one connection.
	Interval time.Duration

	opened, closed, failed atomic.Int64
}

// FloodStats says what a flood did.
type FloodStats struct {
	// Opened counts connections made, Closed the ones the server ended,
	// Failed the dials that did not connect.
	Opened, Closed, Failed int64
}

func (s FloodStats) String() string {
	return fmt.Sprintf("%d connections made, %d closed by the server, %d dials failed", s.Opened, s.Closed, s.Failed)
}

// Stats returns what the flood has done so far.
func (f *Flood) Stats() FloodStats {
	return FloodStats{Opened: f.opened.Load(), Closed: f.closed.Load(), Failed: f.failed.Load()}
}

// floodDialers is how many connections are dialled at once.
const floodDialers = 64

// Run holds the connections until ctx ends, then closes them all.
func (f *Flood) Run(ctx context.Context) {
	slots := make(chan int, f.Conns) // connections to (re)open, by index
	for i := range f.Conns {
		slots <- i
	}
	var mu sync.Mutex
	conns := make([]net.Conn, f.Conns)
	var wg sync.WaitGroup
	for d := range floodDialers {
		wg.Go(func() {
			dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(f.Sources[d%len(f.Sources)])}}
			for {
				var i int
				select {
				case <-ctx.Done():
					return
				case i = <-slots:
				}
				c, err := dialer.DialContext(ctx, "tcp", f.Target)
				if err != nil {
					f.failed.Add(1)
					slots <- i
					select { // a failed dial is not retried at once
					case <-ctx.Done():
						return
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				f.opened.Add(1)
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte("GET /mail/auth.php HTTP/1.0\r\n")); err != nil {
					c.Close()
					f.closed.Add(1)
					slots <- i
					continue
				}
				mu.Lock()
				conns[i] = c
				mu.Unlock()
			}
		})
	}
	wg.Go(func() { f.trickle(ctx, &mu, conns, slots) })
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// trickle sends one byte on every connection each Interval, and hands a
// connection the server closed back to the dialers.
func (f *Flood) trickle(ctx context.Context, mu *sync.Mutex, conns []net.Conn, slots chan<- int) {
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	b := []byte("X")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := range conns {
			mu.Lock()
			c := conns[i]
			mu.Unlock()
			if c == nil {
				continue
			}
			c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := c.Write(b); err != nil {
				c.Close()
				mu.Lock()
				conns[i] = nil
				mu.Unlock()
				f.closed.Add(1)
				slots <- i
			}
		}
	}
}

// RaiseFileLimit raises this process's limit on open files to at least n,
// raising the hard limit too when it can (as root). Processes started
// afterwards inherit it.
func RaiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		lim.Max = n
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return errors.Join(fmt.Errorf("raise the open-file limit to %d (run as root, or raise ulimit -Hn)", n), err)
	}
	return nil
}
