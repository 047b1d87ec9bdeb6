package http1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// drops records OnDrop's calls.
type drops struct {
	mu  sync.Mutex
	got []DropReason
}

func (d *drops) add(r DropReason) {
	d.mu.Lock()
	d.got = append(d.got, r)
	d.mu.Unlock()
}

func (d *drops) count(r DropReason) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, x := range d.got {
		if x == r {
			n++
		}
	}
	return n
}

// syncLog is a log buffer safe for the server's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLimited serves h with s's limits on a fresh listener.
func startLimited(t *testing.T, s *Server) (string, *drops, *syncLog) {
	t.Helper()
	d := &drops{}
	log := &syncLog{}
	s.OnDrop = d.add
	s.Logger = slog.New(slog.NewTextHandler(log, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-done
	})
	return ln.Addr().String(), d, log
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// closedByServer reports whether the server has closed c, reading what
// is left.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A peer Accept refuses is closed before anything it sent is read, and
// the handler never hears of it.
func TestAcceptRefusesPeer(t *testing.T) {
	e := &echo{}
	s := &Server{Handler: e, Accept: func(net.Addr) bool { return false }}
	addr, d, log := startLimited(t, s)
	for range 3 {
		got := exchange(t, addr, nginxHead)
		if got != "" {
			t.Errorf("a refused peer got %q", got)
		}
	}
	waitFor(t, "three refusals", func() bool { return d.count(DropRefused) == 3 })
	// One line for the three: a flood does not flood the log.
	if n := strings.Count(log.String(), "connection dropped"); n != 1 {
		t.Errorf("%d log lines for three refusals, want 1:\n%s", n, log)
	}
	if !strings.Contains(log.String(), "peer refused at accept") {
		t.Errorf("log does not say why:\n%s", log)
	}
}

// At MaxConns a prompt request takes the place of the client that has
// waited longest for its head; the slow clients after it stay.
func TestMaxConnsCutsOffTheSlowest(t *testing.T) {
	s := &Server{Handler: &echo{}, MaxConns: 3}
	addr, d, _ := startLimited(t, s)
	var slow []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /mail/auth.php HTTP/1.0\r\n") // and no more
		slow = append(slow, c)
		// On the waiting list, not merely counted: the list is in the
		// order the workers began to read, which under load need not be
		// the order of accept.
		waitFor(t, "the slow client to wait for its head", func() bool { return s.conns.waitingLen() == i+1 })
	}
	got := exchange(t, addr, nginxHead)
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK") {
		t.Fatalf("a prompt request at the limit got %q", got)
	}
	if !closedByServer(slow[0]) {
		t.Error("the oldest slow client was not cut off")
	}
	waitFor(t, "one eviction", func() bool { return d.count(DropEvicted) == 1 })
	slow[1].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := slow[1].Read(make([]byte, 1)); err == nil || !isTimeout(err) {
		t.Errorf("the second slow client was cut off too: %v", err)
	}
}

// waitingLen is the length of the list of conns waiting for a head.
func (t *tracker) waitingLen() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c := t.head; c != nil; c = c.next {
		n++
	}
	return n
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// blocking holds each request until release is closed.
type blocking struct {
	echo
	started chan struct{}
	release chan struct{}
}

func (b *blocking) Serve(ctx context.Context, w *ResponseWriter, r *Request) {
	b.started <- struct{}{}
	<-b.release
	b.echo.Serve(ctx, w, r)
}

// At MaxConns with every connection busy on a request, nothing can be
// cut off: the new connection is closed, and the busy one is answered.
func TestMaxConnsAllBusy(t *testing.T) {
	b := &blocking{started: make(chan struct{}, 1), release: make(chan struct{})}
	s := &Server{Handler: b, MaxConns: 1}
	addr, d, _ := startLimited(t, s)
	busy := make(chan string, 1)
	go func() { busy <- exchange(t, addr, nginxHead) }()
	<-b.started
	if got := exchange(t, addr, nginxHead); got != "" {
		t.Errorf("a connection over the limit got %q", got)
	}
	// The client may see its connection closed before the drop is
	// reported.
	waitFor(t, "one drop for a full server", func() bool { return d.count(DropFull) == 1 })
	close(b.release)
	if got := <-busy; !strings.HasPrefix(got, "HTTP/1.1 200 OK") {
		t.Errorf("the busy request got %q", got)
	}
	waitFor(t, "the count to drop", func() bool { return s.Open() == 0 })
}

// A client whose head does not arrive within ReadTimeout is cut off,
// with a log line saying so.
func TestSlowClientCutOff(t *testing.T) {
	s := &Server{Handler: &echo{}, ReadTimeout: 100 * time.Millisecond}
	addr, d, log := startLimited(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /mail/auth.php HTTP/1.0\r\nAuth-User: al")
	if !closedByServer(c) {
		t.Fatal("a slow client was not cut off")
	}
	waitFor(t, "the drop", func() bool { return d.count(DropSlow) == 1 })
	if !strings.Contains(log.String(), "request head not read in time") {
		t.Errorf("log does not say a slow client was cut off:\n%s", log)
	}
	if s.Open() != 0 {
		t.Errorf("%d connections still counted", s.Open())
	}
}
