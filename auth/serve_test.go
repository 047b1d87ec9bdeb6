package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/imapcheck"
)

// startServer serves h on loopback with a /metrics fallback and stops it
// when the test ends.
func startServer(t *testing.T, h *Handler, tune func(*http1.Server)) (*http1.Server, string) {
	t.Helper()

	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "imapgate_up 1\n")
	})
	s := &http1.Server{Handler: h, Fields: RequestFields, Fallback: mux, FallbackPaths: []string{"/metrics"}, Logger: h.Logger}
	if tune != nil {
		tune(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http1.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, ln.Addr().String()
}

// lockedBuffer is a log the server writes after answering while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// memConn is a connection from testPeer whose client sent in and then
// closed its side: reads give in, then EOF; writes are kept. Serving it
// needs no goroutine and never waits.
type memConn struct {
	in  *strings.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9180} }
func (c *memConn) RemoteAddr() net.Addr               { return testPeer }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// testPeer is the address every request of roundTrip comes from.
var testPeer = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}

// rawRoundTrip sends raw to h through the production HTTP server, as one
// connection from testPeer, and returns all it answers.
func rawRoundTrip(t testing.TB, h *Handler, raw string) string {
	t.Helper()
	c := &memConn{in: strings.NewReader(raw)}
	srv := &http1.Server{Handler: h, Fields: RequestFields}
	srv.ServeConn(c)
	return c.out.String()
}

// roundTrip is rawRoundTrip with the response parsed; a response that does
// not parse fails the test and reads as one without header fields.
func roundTrip(t testing.TB, h *Handler, raw string) *http.Response {
	t.Helper()
	out := rawRoundTrip(t, h, raw)
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Errorf("response %q: %v", out, err)
		return &http.Response{Header: http.Header{}}
	}
	return resp
}

// rawRequest is h as nginx would send it: a GET with these header fields.
func rawRequest(h http.Header) string {
	var b strings.Builder
	b.WriteString("GET /mail/auth.php HTTP/1.0\r\nHost: 127.0.0.1\r\n")
	for name, values := range h {
		for _, v := range values {
			b.WriteString(name + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// serverHandler is newTestHandler logging to a lockedBuffer.
func serverHandler(t *testing.T, v Verifier) (*Handler, *lockedBuffer) {
	t.Helper()
	log := &lockedBuffer{}
	h := newTestHandler(t, &fakeVerifier{}, &bytes.Buffer{})
	h.Verifier = v
	h.Logger = slog.New(slog.NewTextHandler(log, nil))
	return h, log
}

// nginxRequest is a request exactly as nginx sends it.
func nginxRequest(extra ...string) string {
	lines := []string{
		"GET /mail/auth.php HTTP/1.0",
		"Host: 127.0.0.1",
		"Auth-Method: plain",
		"Auth-User: alice",
		"Auth-Pass: p%20a+ss%25",
		"Auth-Protocol: imap",
		"Auth-Login-Attempt: 1",
		"Client-IP: 192.0.2.7",
	}
	lines = append(lines, extra...)
	return strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// exchange sends raw on a new connection and returns everything the
// server sends until it closes.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, out)
	}
	return string(out)
}

func parseResponse(t testing.TB, raw string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("response %q: %v", raw, err)
	}
	return resp
}

func TestServerAnswersNginx(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	h, _ := serverHandler(t, v)
	_, addr := startServer(t, h, nil)
	raw := exchange(t, addr, nginxRequest())
	want := "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 192.0.2.22\r\nAuth-Port: 143\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	if raw != want {
		t.Errorf("response\n%q\nwant\n%q", raw, want)
	}
	if len(v.calls) != 1 || v.calls[0].Password != "p a+ss%" {
		t.Errorf("checks: %+v", v.calls)
	}
}

func TestServerMalformed(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	h, log := serverHandler(t, v)
	_, addr := startServer(t, h, func(s *http1.Server) { s.MaxHeaderBytes = 2048 })
	for _, tt := range []struct {
		name, raw string
		code      int
		status    string
	}{
		{"garbage request line", "GARBAGE\r\n\r\n", 400, StatusMalformed},
		{"unknown protocol version", "GET / HTTP/2.0\r\n\r\n", 400, StatusMalformed},
		{"header without colon", nginxRequest("Broken header"), 400, StatusMalformed},
		{"obsolete line folding", nginxRequest("X-Folded: a", " continued"), 400, StatusMalformed},
		{"bad field name", nginxRequest("Bad Name: x"), 400, StatusMalformed},
		{"head too large", nginxRequest("X-Big: " + strings.Repeat("x", 3000)), 431, StatusMalformed},
		{"line longer than the buffer", nginxRequest("X-Big: " + strings.Repeat("x", 5000)), 431, StatusMalformed},
		{"duplicate Auth-User", nginxRequest("Auth-User: mallory"), 400, StatusMalformed},
		{"missing fields", "GET /mail/auth.php HTTP/1.0\r\n\r\n", 400, StatusMalformed},
		{"field names any case", strings.ReplaceAll(nginxRequest(), "Auth-Method", "aUTH-mETHOD"), 200, StatusOK},
		{"bare LF line ends", strings.ReplaceAll(nginxRequest(), "\r\n", "\n"), 200, StatusOK},
		{"request with a body", strings.Replace(nginxRequest("Content-Length: 4"), "\r\n\r\n", "\r\n\r\nbody", 1), 200, StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := parseResponse(t, exchange(t, addr, tt.raw))
			if resp.StatusCode != tt.code || resp.Header.Get("Auth-Status") != tt.status {
				t.Errorf("answer %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Auth-Status"), tt.code, tt.status)
			}
			if !resp.Close {
				t.Error("connection kept open after an HTTP/1.0 or broken request")
			}
		})
	}
	if strings.Contains(log.String(), "p a+ss") || strings.Contains(log.String(), "p%20a+ss") {
		t.Errorf("log carries the password:\n%s", log.String())
	}
}

func TestServerKeepAliveAndPipelining(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	h, _ := serverHandler(t, v)
	_, addr := startServer(t, h, nil)
	one := strings.Replace(nginxRequest(), "HTTP/1.0", "HTTP/1.1", 1)
	last := strings.Replace(nginxRequest("Connection: close"), "HTTP/1.0", "HTTP/1.1", 1)
	// Three requests in one write: answered in order, the last closes.
	raw := exchange(t, addr, one+one+last)
	r := bufio.NewReader(strings.NewReader(raw))
	for i := range 3 {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("response %d: %v in %q", i, err, raw)
		}
		if resp.Header.Get("Auth-Status") != "OK" || resp.Close != (i == 2) {
			t.Errorf("response %d: %v close=%v", i, resp.Header, resp.Close)
		}
	}
	if len(v.calls) != 3 {
		t.Errorf("%d checks for 3 requests", len(v.calls))
	}
}

func TestServerFallback(t *testing.T) {
	h, _ := serverHandler(t, &fakeVerifier{})
	_, addr := startServer(t, h, nil)
	resp := parseResponse(t, exchange(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "imapgate_up 1\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("/metrics: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	// Any other path is auth_http.
	resp = parseResponse(t, exchange(t, addr, strings.Replace(nginxRequest(), "/mail/auth.php", "/metrics/x", 1)))
	if resp.Header.Get("Auth-Status") == "" {
		t.Errorf("/metrics/x was not answered as auth_http: %v", resp.Header)
	}
}

func TestServerSharedSecret(t *testing.T) {
	h, _ := serverHandler(t, &fakeVerifier{outcome: imapcheck.OK})
	h.SharedSecret = "s3cret"
	_, addr := startServer(t, h, nil)
	resp := parseResponse(t, exchange(t, addr, nginxRequest()))
	if resp.StatusCode != 403 || resp.Header.Get("Auth-Status") != "" {
		t.Errorf("without the secret: %d %v", resp.StatusCode, resp.Header)
	}
	resp = parseResponse(t, exchange(t, addr, nginxRequest("X-Imapgate-Secret: s3cret")))
	if resp.StatusCode != 200 || resp.Header.Get("Auth-Status") != "OK" {
		t.Errorf("with the secret: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestServerShutdown: a login being checked is answered, a kept-alive
// idle connection is closed, new connections are refused.
func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	g := &gateVerifier{release: release, outcome: imapcheck.OK, entered: make(chan struct{}, 2)}
	h, _ := serverHandler(t, &fakeVerifier{})
	h.Verifier = g
	s := &http1.Server{Handler: h, Fields: RequestFields}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, strings.Replace(nginxRequest("Auth-User: cathy"), "Auth-User: alice\r\n", "", 1))
	// cathy's check is held too; wait for its answer below after release.

	var wg sync.WaitGroup
	var inflight string
	wg.Go(func() { inflight = exchange(t, addr, nginxRequest()) })
	<-g.entered // both checks have started
	<-g.entered
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- s.Shutdown(ctx)
	}()
	close(release)
	wg.Wait()
	if !strings.Contains(inflight, "Auth-Status: OK") {
		t.Errorf("login in flight at shutdown: %q", inflight)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http1.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("new connection accepted after Shutdown")
	}
}

func TestServerReadTimeout(t *testing.T) {
	h, _ := serverHandler(t, &fakeVerifier{})
	_, addr := startServer(t, h, func(s *http1.Server) { s.ReadTimeout = 50 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /mail/auth.php HTTP/1.0\r\nAuth-Method: pl") // and nothing more
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a stalled request head: read %d, %v; want the server to hang up", n, err)
	}
}
