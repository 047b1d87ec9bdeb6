package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Server serves a Handler over HTTP/1.x with a reader and writer of its
// own. nginx asks with one small GET per connection and reads only the
// response's headers, so most of what net/http does per request (a header
// map, a Request, a ResponseWriter, a context per connection) is work
// nginx never needed: Server reads the request head line by line, keeps
// only the fields auth_http uses, and writes the answer in one write.
//
// Requests for FallbackPaths (/metrics, /healthz, /readyz) are handed to
// Fallback with net/http's types, so that any http.Handler works there.
type Server struct {
	// Handler answers auth_http requests: every path but FallbackPaths.
	Handler *Handler
	// Fallback, when set, serves FallbackPaths.
	Fallback http.Handler
	// FallbackPaths are the exact paths (query aside) sent to Fallback.
	FallbackPaths []string
	// ReadTimeout bounds reading a request head; 0 means 5s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; 0 means 5s.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection (nginx never keeps one; curl and load tools do); 0 means
	// 30s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head; 0 means 16 KiB.
	MaxHeaderBytes int
	// Logger gets the server's own problems; nil means slog.Default().
	Logger *slog.Logger

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	idle       map[net.Conn]struct{} // kept-alive conns between requests
	active     sync.WaitGroup
	inShutdown atomic.Bool

	// Idle workers wait on work for their next connection: a goroutine
	// that has served one connection has the stack it needs, where a new
	// one would grow its stack again for each connection.
	work     chan net.Conn
	done     chan struct{}
	initOnce sync.Once
}

// workerIdle is how long a worker waits for another connection before
// it ends.
const workerIdle = 10 * time.Second

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.work = make(chan net.Conn)
		s.done = make(chan struct{})
	})
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

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// requestFields are the header fields an auth_http request is answered
// from, and Connection, which says whether to keep the connection.
var requestFields = [...]string{
	"Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol", "Auth-Login-Attempt",
	"Client-IP", secretHeader, "Connection", "Content-Length", "Transfer-Encoding",
}

const (
	fieldConnection = len(requestFields) - 3
	fieldLength     = len(requestFields) - 2
	fieldEncoding   = len(requestFields) - 1
)

// headFields are requestFields as one request head carried them.
type headFields struct {
	values [len(requestFields)]string
	counts [len(requestFields)]int
}

func (f *headFields) field(name string) (string, int) {
	for i, known := range requestFields {
		if known == name {
			return f.values[i], f.counts[i]
		}
	}
	return "", 0
}

// Readers and answer buffers are reused across connections: a new
// connection per request is the normal case. A connection holds neither
// while its login is being checked (see serveConn).
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	outPool    = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// send writes build's bytes to c with one write, through a pooled buffer.
func (s *Server) send(c net.Conn, build func(*bytes.Buffer)) error {
	out := outPool.Get().(*bytes.Buffer)
	defer outPool.Put(out)
	out.Reset()
	build(out)
	c.SetWriteDeadline(time.Now().Add(s.writeTimeout()))
	_, err := c.Write(out.Bytes())
	return err
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

// Serve accepts connections on ln and serves each in a goroutine of its
// own until Shutdown. It always returns an error, ErrServerClosed after
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
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
		s.active.Add(1)
		s.dispatch(conn)
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

// errHeadTooLarge is a request head over MaxHeaderBytes.
var errHeadTooLarge = errors.New("request head too large")

// requestHead is what Server reads of a request.
type requestHead struct {
	method, target string
	http11         bool
	fields         headFields
	// header holds every field, only for a Fallback path.
	header http.Header
}

func (s *Server) serveConn(c net.Conn) {
	defer s.active.Done()
	defer c.Close()
	r := readerPool.Get().(*bufio.Reader)
	r.Reset(c)
	// release gives the reader back; a nil r is already given back.
	release := func() {
		if r != nil {
			r.Reset(nil)
			readerPool.Put(r)
			r = nil
		}
	}
	defer release()
	remote := c.RemoteAddr()
	for first := true; ; first = false {
		if !first {
			// Between requests the conn is idle: Shutdown may close it.
			if !s.setIdle(c, true) {
				return
			}
			c.SetReadDeadline(time.Now().Add(s.idleTimeout()))
			_, err := r.Peek(1)
			s.setIdle(c, false)
			if err != nil || s.inShutdown.Load() {
				return
			}
		}
		c.SetReadDeadline(time.Now().Add(s.readTimeout()))
		head, err := s.readHead(r)
		if err != nil {
			if err == io.EOF && first {
				return // connected and left: nothing to answer
			}
			code := http.StatusBadRequest
			if errors.Is(err, errHeadTooLarge) {
				code = http.StatusRequestHeaderFieldsTooLarge
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return // nobody to answer
			}
			// Answered like any malformed request: nginx shows its text.
			s.send(c, func(out *bytes.Buffer) { writeResponse(out, code, Response{Status: StatusMalformed}, false) })
			s.Handler.Metrics.request("", outcomeMalformed)
			s.logger().Warn("login", "outcome", outcomeMalformed, "reason", err.Error(), "remote", remote.String())
			release()
			lingerClose(c)
			return
		}
		keep := head.http11 && !strings.EqualFold(head.fields.values[fieldConnection], "close")
		if head.fields.values[fieldLength] != "" && head.fields.values[fieldLength] != "0" || head.fields.counts[fieldEncoding] > 0 {
			// auth_http requests have no body; reading one is not worth
			// the risk of misreading where the next request starts.
			keep = false
		}
		if head.header != nil {
			release()
			s.send(c, func(out *bytes.Buffer) { s.serveFallback(out, head, remote) })
			return
		}
		if !keep {
			// nginx's case: nothing more will be read, so the reader can
			// serve other connections while this login is checked.
			release()
		}
		code, resp, a := s.Handler.answer(context.Background(), &head.fields, remote)
		err = s.send(c, func(out *bytes.Buffer) { writeResponse(out, code, resp, keep) })
		// Logged once nginx has its answer: nginx need not wait for it.
		s.Handler.record(a)
		if err != nil || !keep {
			return
		}
	}
}

// lingerClose ends the sending side and reads what the client still sends
// for a moment before the conn is closed: closing with unread data makes
// the kernel send a reset, which can destroy the answer before the client
// has read it.
func lingerClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c, 256<<10)
}

// readHead reads one request head (RFC 9112 sections 3 and 5).
func (s *Server) readHead(r *bufio.Reader) (*requestHead, error) {
	budget := s.maxHeaderBytes()
	line, err := readHeadLine(r, &budget)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return nil, fmt.Errorf("malformed request line %q", truncate(line))
	}
	head := &requestHead{method: strings.Clone(method), target: strings.Clone(target)}
	switch proto {
	case "HTTP/1.1":
		head.http11 = true
	case "HTTP/1.0":
	default:
		return nil, fmt.Errorf("unsupported protocol %q", truncate(proto))
	}
	path, _, _ := strings.Cut(target, "?")
	for _, p := range s.FallbackPaths {
		if path == p && s.Fallback != nil {
			head.header = http.Header{}
		}
	}
	for {
		line, err := readHeadLine(r, &budget)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if line == "" {
			return head, nil
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || !validFieldName(name) {
			// Also refuses obsolete line folding (a leading space).
			return nil, fmt.Errorf("malformed header line %q", truncate(line))
		}
		value = strings.Trim(value, " \t")
		if head.header != nil {
			head.header.Add(strings.Clone(name), strings.Clone(value))
		}
		for i, known := range requestFields {
			if strings.EqualFold(name, known) {
				if head.fields.counts[i] == 0 {
					head.fields.values[i] = strings.Clone(value)
				}
				head.fields.counts[i]++
				break
			}
		}
	}
}

// readHeadLine returns one line of a request head without its line end,
// charging its length to budget. The string shares the reader's buffer:
// it is valid only until the next read, so callers copy what they keep.
func readHeadLine(r *bufio.Reader, budget *int) (string, error) {
	b, err := r.ReadSlice('\n')
	*budget -= len(b)
	if *budget < 0 || err == bufio.ErrBufferFull {
		return "", errHeadTooLarge
	}
	if err != nil {
		if len(b) == 0 && err == io.EOF {
			return "", io.EOF
		}
		return "", err
	}
	b = bytes.TrimSuffix(b[:len(b)-1], []byte{'\r'})
	return unsafe.String(unsafe.SliceData(b), len(b)), nil
}

// validFieldName reports whether name is an RFC 9110 token.
func validFieldName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// writeResponse writes resp as an HTTP/1.1 response with no body. nginx
// reads only the header fields (up to 1024 bytes, the status line
// included); the status code is for people using curl.
func writeResponse(out *bytes.Buffer, code int, resp Response, keep bool) {
	out.WriteString("HTTP/1.1 ")
	out.WriteString(strconv.Itoa(code))
	out.WriteByte(' ')
	out.WriteString(http.StatusText(code))
	out.WriteString("\r\n")
	if code != http.StatusForbidden {
		resp.eachHeader(func(name, value string) {
			out.WriteString(name)
			out.WriteString(": ")
			out.WriteString(value)
			out.WriteString("\r\n")
		})
	}
	out.WriteString("Content-Length: 0\r\n")
	if !keep {
		out.WriteString("Connection: close\r\n")
	}
	out.WriteString("\r\n")
}

// serveFallback serves a Fallback path through net/http's types and
// writes the response, closing the connection after it.
func (s *Server) serveFallback(out *bytes.Buffer, head *requestHead, remote net.Addr) {
	req, err := http.NewRequest(head.method, head.target, nil)
	if err != nil {
		writeResponse(out, http.StatusBadRequest, Response{Status: StatusMalformed}, false)
		return
	}
	req.Header = head.header
	req.RemoteAddr = remote.String()
	req.Host = head.header.Get("Host")
	w := &bufferedResponse{header: http.Header{}}
	s.Fallback.ServeHTTP(w, req)
	if w.code == 0 {
		w.code = http.StatusOK
	}
	fmt.Fprintf(out, "HTTP/1.1 %d %s\r\n", w.code, http.StatusText(w.code))
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	w.header.Write(out)
	out.WriteString("\r\n")
	if head.method != http.MethodHead {
		out.Write(w.body.Bytes())
	}
}

// bufferedResponse is an http.ResponseWriter that keeps the response for
// serveFallback to write.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *bufferedResponse) Header() http.Header { return w.header }

func (w *bufferedResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *bufferedResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
