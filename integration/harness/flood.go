package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// Line is the stats as cmd/flood prints them.
func (s FloodStats) Line() string {
	return fmt.Sprintf("opened %d closed %d failed %d", s.Opened, s.Closed, s.Failed)
}

// parseFloodLine reads a Line.
func parseFloodLine(line string) (FloodStats, bool) {
	var s FloodStats
	_, err := fmt.Sscanf(line, "opened %d closed %d failed %d", &s.Opened, &s.Closed, &s.Failed)
	return s, err == nil
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

// floodPerProcess is the most connections one flood process holds: a
// process's descriptors are bounded by its limit (often 20,000 here, and
// not to be raised without CAP_SYS_RESOURCE).
const floodPerProcess = 12000

// FloodRun is a flood running in processes of its own.
type FloodRun struct {
	procs []*exec.Cmd
	mu    sync.Mutex
	last  []FloodStats
	done  sync.WaitGroup
}

// StartFlood runs f (Conns split over processes of at most 12,000 each,
// Sources dealt out among them) until Stop. It builds cmd/flood first.
func (e *Env) StartFlood(ctx context.Context, f *Flood) (*FloodRun, error) {
	bin, err := e.floodBinary(ctx)
	if err != nil {
		return nil, err
	}
	n := (f.Conns + floodPerProcess - 1) / floodPerProcess
	r := &FloodRun{last: make([]FloodStats, n)}
	for i := range n {
		var sources []string
		for j, s := range f.Sources {
			if j%n == i || len(f.Sources) < n {
				sources = append(sources, s)
			}
		}
		conns := f.Conns / n
		if i == 0 {
			conns += f.Conns % n
		}
		cmd := exec.Command(bin, "-target", f.Target, "-sources", strings.Join(sources, ","),
			"-conns", strconv.Itoa(conns), "-interval", f.Interval.String())
		out, err := cmd.StdoutPipe()
		if err != nil {
			r.Stop()
			return nil, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			r.Stop()
			return nil, err
		}
		r.procs = append(r.procs, cmd)
		r.done.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if s, ok := parseFloodLine(sc.Text()); ok {
					r.mu.Lock()
					r.last[i] = s
					r.mu.Unlock()
				}
			}
		})
	}
	return r, nil
}

// Stats sums what the flood's processes last reported.
func (r *FloodRun) Stats() FloodStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sum FloodStats
	for _, s := range r.last {
		sum.Opened += s.Opened
		sum.Closed += s.Closed
		sum.Failed += s.Failed
	}
	return sum
}

// Stop ends the flood's processes, waits for them, and returns the stats.
func (r *FloodRun) Stop() FloodStats {
	for _, cmd := range r.procs {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	r.done.Wait()
	for _, cmd := range r.procs {
		cmd.Wait()
	}
	r.procs = nil
	return r.Stats()
}

// floodBuild is cmd/flood, built once per run.
type floodBuild struct {
	once sync.Once
	bin  string
	err  error
}

// floodBinary builds cmd/flood into the run directory, once.
func (e *Env) floodBinary(ctx context.Context) (string, error) {
	b := &e.flood
	b.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			b.err = err
			return
		}
		b.bin = filepath.Join(e.Dir, "flood")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./integration/cmd/flood")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./integration/cmd/flood: %v\n%s", err, out)
		}
	})
	return b.bin, b.err
}
