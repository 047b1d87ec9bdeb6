package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo answers with the request's target and kept fields, and records the
// malformed heads it is told about.
type echo struct {
	mu        sync.Mutex
	malformed []int
}

func (e *echo) Serve(_ context.Context, w *ResponseWriter, r *Request) {
	w.Add("X-Target", r.Target)
	for _, f := range r.Header {
		w.Add("X-"+f.Name, f.Value)
	}
}

func (e *echo) ServeMalformed(w *ResponseWriter, _ net.Addr, err error) {
	e.mu.Lock()
	e.malformed = append(e.malformed, w.Code())
	e.mu.Unlock()
	w.Add("X-Error", "malformed")
}

func startEcho(t *testing.T, e *echo) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	s := &Server{Handler: e, Fields: []string{"Auth-User"}, Fallback: mux, FallbackPaths: []string{"/metrics"}, MaxHeaderBytes: 2048}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	// The server sees the end of the request, as it would see a client
	// that gave up.
	c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return string(out)
}

func TestServerAnswersInOneHead(t *testing.T) {
	addr := startEcho(t, &echo{})
	got := exchange(t, addr, nginxHead)
	want := "HTTP/1.1 200 OK\r\nX-Target: /mail/auth.php\r\nX-Auth-User: alice\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	if got != want {
		t.Errorf("answer\n%q\nwant\n%q", got, want)
	}
}

func TestServerKeepsAliveAndPipelines(t *testing.T) {
	addr := startEcho(t, &echo{})
	one := "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
	last := "GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n"
	r := bufio.NewReader(strings.NewReader(exchange(t, addr, one+strings.Replace(one, "/1", "/2", 1)+last)))
	for i := range 3 {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if resp.Header.Get("X-Target") != "/"+string(rune('1'+i)) || resp.Close != (i == 2) {
			t.Errorf("response %d: %v close=%v", i, resp.Header, resp.Close)
		}
	}
	// A body ends the connection after the answer.
	resp, _ := http.ReadResponse(bufio.NewReader(strings.NewReader(exchange(t, addr, "GET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"))), nil)
	if resp == nil || !resp.Close {
		t.Errorf("request with a body: %v", resp)
	}
}

func TestServerMalformedGoesToHandler(t *testing.T) {
	e := &echo{}
	addr := startEcho(t, e)
	for _, tt := range []struct {
		raw  string
		code int
	}{
		{"GARBAGE\r\n\r\n", 400},
		{"GET / HTTP/1.0\r\nX-Big: " + strings.Repeat("x", 3000) + "\r\n\r\n", 431},
	} {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(exchange(t, addr, tt.raw))), nil)
		if err != nil || resp.StatusCode != tt.code || resp.Header.Get("X-Error") != "malformed" {
			t.Errorf("answer to %.20q: %v %v", tt.raw, resp, err)
		}
	}
	// Connected and left, or cut short: nobody to answer, nothing said.
	exchange(t, addr, "")
	exchange(t, addr, "GET / HTTP/1.0\r\nHost")
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.malformed) != 2 || e.malformed[0] != 400 || e.malformed[1] != 431 {
		t.Errorf("ServeMalformed saw codes %v, want [400 431]", e.malformed)
	}
}

func TestServerFallback(t *testing.T) {
	addr := startEcho(t, &echo{})
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(exchange(t, addr, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "up 1\n" {
		t.Errorf("/metrics: %d %q", resp.StatusCode, body)
	}
	if got := exchange(t, addr, "GET /metrics/x HTTP/1.0\r\n\r\n"); !strings.Contains(got, "X-Target: /metrics/x") {
		t.Errorf("/metrics/x not served by the Handler: %q", got)
	}
}

func TestNetHTTPServesTheSameAnswer(t *testing.T) {
	srv := httptest.NewServer(NetHTTP(&echo{}, []string{"Auth-User"}))
	defer srv.Close()
	got := exchange(t, strings.TrimPrefix(srv.URL, "http://"), nginxHead)
	for _, want := range []string{" 200 OK\r\n", "X-Target: /mail/auth.php\r\n", "X-Auth-User: alice\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("net/http answer %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "X-Host") {
		t.Errorf("a field not kept reached the Handler: %q", got)
	}
}
