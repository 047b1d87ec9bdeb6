package http1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers the requests a Server reads.
type Handler interface {
	// Serve writes the answer to req on w. The Server sends it when Serve
	// returns, or when Serve calls w.Send; what Serve does after Send does
	// not delay the client. req and w are valid only until Serve returns.
	Serve(ctx context.Context, w *ResponseWriter, req *Request)
	// ServeMalformed writes the answer to a request head that could not be
	// read, whose status code (400 or 431) is already set; err says what
	// was wrong, without quoting more than a little of the request.
	ServeMalformed(w *ResponseWriter, remote net.Addr, err error)
}

// Server serves a Handler over HTTP/1.x on short connections. Most of
// what net/http does per request (a header map, a Request, a
// ResponseWriter, a context per connection) is work a client that sends
// one small GET per connection and reads only header fields never needs:
// Server reads the head line by line into reused storage, keeps only the
// header fields in Fields, and writes the answer with one write.
// It keeps connections alive for HTTP/1.1 clients (curl, load tools)
// and answers pipelined requests in order.
//
// The defaults are the zero-value fallbacks below, used by tests; the
// program sets every field from its settings.
type Server struct {
	// Handler answers every request but those for FallbackPaths.
	Handler Handler
	// Fields are the header fields kept for Handler; nil keeps all.
	Fields []string
	// Fallback, when set, serves FallbackPaths through net/http's types,
	// so that any http.Handler works there.
	Fallback http.Handler
	// FallbackPaths are the exact paths (query aside) sent to Fallback.
	FallbackPaths []string
	// ReadTimeout bounds reading a request head; 0 means 5s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; 0 means 5s.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection; 0 means 30s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head; 0 means 16 KiB.
	MaxHeaderBytes int
	// Logger gets the server's own problems; nil means slog.Default().
	Logger *slog.Logger
	// MaxConns bounds the connections open at once; 0 means no bound.
	// At the bound a new connection takes the place of the one that has
	// waited longest for its request head (a slow or idle client), so a
	// crowd of slow clients cannot keep a prompt one out; only when every
	// connection is busy on a request is the new one closed unread.
	MaxConns int
	// Accept, when set, is asked about each connection's peer as it is
	// accepted, before a byte is read; false closes the connection.
	Accept func(remote net.Addr) bool
	// OnDrop, when set, is told of every connection the server ends on
	// its own (see DropReason), for metrics. The server also logs them,
	// at most one line per reason every 10 s with the count in between.
	OnDrop func(DropReason)

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	idle       map[net.Conn]struct{} // kept-alive conns between requests
	active     sync.WaitGroup
	inShutdown atomic.Bool
	conns      tracker

	// Idle workers wait on work for their next connection: a goroutine
	// that has served one connection has the stack it needs, where a new
	// one would grow its stack again for each connection.
	work     chan net.Conn
	done     chan struct{}
	initOnce sync.Once
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// workerIdle is how long a worker waits for another connection before
// it ends.
const workerIdle = 10 * time.Second

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.work = make(chan net.Conn)
		s.done = make(chan struct{})
	})
}

func (s *Server) readTimeout() time.Duration  { return orDefault(s.ReadTimeout, 5*time.Second) }
func (s *Server) writeTimeout() time.Duration { return orDefault(s.WriteTimeout, 5*time.Second) }
func (s *Server) idleTimeout() time.Duration  { return orDefault(s.IdleTimeout, 30*time.Second) }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return 16 << 10
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Serve accepts connections on ln and serves them until Shutdown. It
// always returns an error, ErrServerClosed after Shutdown. On Linux it
// accepts on a duplicate of a TCP or unix listener's descriptor (see
// fdListener), so that closing ln alone does not stop it: Shutdown does.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	ln = listenFD(ln)
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait a little, as
			// net/http does, rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger().Warn("accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.admit(conn) {
			s.active.Add(1)
			s.dispatch(conn)
		}
	}
}

// admit decides on a connection just accepted, before anything is read
// from it: Accept's verdict on the peer, then room under MaxConns.
func (s *Server) admit(c net.Conn) bool {
	if s.Accept != nil && !s.Accept(c.RemoteAddr()) {
		c.Close()
		s.dropped(DropRefused, c.RemoteAddr())
		return false
	}
	evicted, ok := s.conns.admit(s.MaxConns)
	if !ok {
		c.Close()
		s.dropped(DropFull, c.RemoteAddr())
		return false
	}
	if evicted != nil {
		s.dropped(DropEvicted, evicted)
	}
	return true
}

// ServeConn serves the requests of one connection the caller accepted, as
// Serve would, and closes it when it is done.
func (s *Server) ServeConn(c net.Conn) {
	s.init()
	if !s.admit(c) {
		return
	}
	s.active.Add(1)
	s.serveConn(c)
}

// dispatch hands c to an idle worker, or starts one.
func (s *Server) dispatch(c net.Conn) {
	select {
	case s.work <- c:
	default:
		go s.worker(c)
	}
}

// worker serves c, then whatever connections dispatch hands it, until it
// has waited workerIdle for one or the server shuts down.
func (s *Server) worker(c net.Conn) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.serveConn(c)
		idle.Reset(workerIdle)
		select {
		case c = <-s.work:
		case <-idle.C:
			return
		case <-s.done:
			return
		}
	}
}

// Shutdown stops accepting, closes kept-alive connections that wait for a
// request, and waits until every request being answered is done or ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if !s.inShutdown.Swap(true) {
		close(s.done) // idle workers end
	}
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.idle {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// setIdle marks c as waiting for a request (closable by Shutdown) or not.
// It reports false when the server is shutting down and c must close.
func (s *Server) setIdle(c net.Conn, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idle {
		if s.inShutdown.Load() {
			return false
		}
		if s.idle == nil {
			s.idle = make(map[net.Conn]struct{})
		}
		s.idle[c] = struct{}{}
	} else {
		delete(s.idle, c)
	}
	return true
}
