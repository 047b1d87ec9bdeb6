package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// conn is one connection's state. It is pooled with its storage, since a
// new connection per request is the normal case; its reader is given back
// while a request that will be the connection's last is being answered,
// so that a connection waiting for a slow answer holds no read buffer.
type conn struct {
	s         *Server
	nc        net.Conn
	hr        headReader // hr.r is nil while given back
	req       Request
	w         ResponseWriter
	keepAlive bool

	// The server's tracker links the conns waiting for a request head;
	// its lock guards these.
	prev, next *conn
	waiting    bool // on the tracker's list
	evicted    bool // cut off, and uncounted, by the tracker
}

var (
	connPool   = sync.Pool{New: func() any { return new(conn) }}
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	outPool    = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// serveConn serves the requests of nc until it is done, then closes it.
func (s *Server) serveConn(nc net.Conn) {
	defer s.active.Done()
	defer nc.Close()
	c := connPool.Get().(*conn)
	c.s, c.nc = s, nc
	c.hr.r = readerPool.Get().(*bufio.Reader)
	c.hr.r.Reset(nc)
	c.req.RemoteAddr = nc.RemoteAddr()
	s.conns.wait(c, true)
	defer func() {
		s.conns.done(c)
		c.releaseReader()
		c.s, c.nc, c.req.RemoteAddr = nil, nil, nil
		clear(c.req.Header) // drop the strings, keep the storage
		clear(c.w.fields)
		connPool.Put(c)
	}()
	for c.serveOne() {
		// Between requests the conn is idle: Shutdown may close it.
		if !s.setIdle(nc, true) {
			return
		}
		nc.SetReadDeadline(time.Now().Add(s.idleTimeout()))
		s.conns.wait(c, true)
		_, err := c.hr.r.Peek(1)
		s.setIdle(nc, false)
		if err != nil || s.inShutdown.Load() {
			return
		}
	}
}

// releaseReader gives the reader back to the pool.
func (c *conn) releaseReader() {
	if c.hr.r != nil {
		c.hr.r.Reset(nil)
		readerPool.Put(c.hr.r)
		c.hr.r = nil
	}
}

// serveOne reads and answers one request. It reports whether the
// connection stays open for another.
func (c *conn) serveOne() bool {
	s := c.s
	c.nc.SetReadDeadline(time.Now().Add(s.readTimeout()))
	if err := c.hr.readRequestLine(&c.req, s.maxHeaderBytes()); err != nil {
		return c.badHead(err)
	}
	if s.isFallback(c.req.Target) {
		s.conns.wait(c, false)
		c.serveFallback()
		return false
	}
	info, err := c.hr.readFields(&c.req, s.Fields)
	if err != nil {
		return c.badHead(err)
	}
	s.conns.wait(c, false) // the head is in: busy, not to be cut off
	// A body is not worth the risk of misreading where the next request
	// starts: the connection ends after the answer.
	c.keepAlive = c.req.HTTP11 && !info.close && !info.hasBody
	if !c.keepAlive {
		// Nothing more will be read.
		c.releaseReader()
	}
	c.w.reset(c)
	s.Handler.Serve(context.Background(), &c.w, &c.req)
	return c.w.Send() == nil && c.keepAlive
}

// badHead ends a connection whose head could not be read, answering it
// through the Handler when there is someone to answer.
func (c *conn) badHead(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// Too slow: a client that needs more than ReadTimeout for a
		// head holds a connection for nothing. Nobody to answer.
		c.s.dropped(DropSlow, c.req.RemoteAddr)
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return false // connected and left, or gone (cut off): nobody to answer
	}
	code := http.StatusBadRequest
	if errors.Is(err, ErrHeadTooLarge) {
		code = http.StatusRequestHeaderFieldsTooLarge
	}
	c.keepAlive = false
	c.releaseReader()
	c.w.reset(c)
	c.w.WriteHeader(code)
	c.s.Handler.ServeMalformed(&c.w, c.req.RemoteAddr, err)
	c.w.Send()
	lingerClose(c.nc)
	return false
}

// send writes the answer with one write, through a pooled buffer.
func (c *conn) send(w *ResponseWriter) error {
	out := outPool.Get().(*bytes.Buffer)
	defer outPool.Put(out)
	out.Reset()
	w.writeHead(out, c.keepAlive)
	c.nc.SetWriteDeadline(time.Now().Add(c.s.writeTimeout()))
	_, err := c.nc.Write(out.Bytes())
	return err
}

// lingerClose ends the sending side and reads what the client still sends
// for a moment before the conn is closed: closing with unread data makes
// the kernel send a reset, which can destroy the answer before the client
// has read it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c, 256<<10)
}

// isFallback reports whether target's path is one of FallbackPaths.
func (s *Server) isFallback(target string) bool {
	if s.Fallback == nil {
		return false
	}
	path, _, _ := strings.Cut(target, "?")
	for _, p := range s.FallbackPaths {
		if path == p {
			return true
		}
	}
	return false
}

// serveFallback reads the rest of the head, keeping every field, serves
// it with Fallback through net/http's types, and writes the response; the
// connection closes after it.
func (c *conn) serveFallback() {
	_, err := c.hr.readFields(&c.req, nil)
	if err != nil {
		c.badHead(err)
		return
	}
	c.releaseReader()
	req, err := http.NewRequest(c.req.Method, c.req.Target, nil)
	if err != nil {
		c.badHead(fmt.Errorf("%w: %v", errBadHead, err))
		return
	}
	for _, f := range c.req.Header {
		req.Header.Add(f.Name, f.Value)
	}
	req.RemoteAddr = c.req.RemoteAddr.String()
	req.Host = req.Header.Get("Host")
	rec := &bufferedResponse{header: http.Header{}}
	c.s.Fallback.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\n", rec.code, http.StatusText(rec.code))
	rec.header.Set("Content-Length", strconv.Itoa(rec.body.Len()))
	rec.header.Set("Connection", "close")
	rec.header.Write(&out)
	out.WriteString("\r\n")
	if req.Method != http.MethodHead {
		out.Write(rec.body.Bytes())
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.writeTimeout()))
	c.nc.Write(out.Bytes())
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
