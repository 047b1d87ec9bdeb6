package auth

// Benchmarks of the per-request hot path, with allocation counts:
//
//	go test -run '^$' -bench . -benchmem ./auth
//	go test -run '^$' -bench ServeLoopback -cpuprofile cpu.out ./auth && go tool pprof -top auth.test cpu.out

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
	"github.com/prometheus/client_golang/prometheus"
)

func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		h    http.Header
	}{
		{"plain", nginxHeader()},
		{"escaped password", nginxHeader("Auth-Pass", "p%20a+s%25s%20word")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(bc.h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnescape(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"no escape", "alice-pw-6d1f2"},
		{"escaped", "p%20a+s%25s%20w%C3%B6rd"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Unescape(bc.s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFingerprint is the keyed digest every plain login computes
// (the cache key's password part).
func BenchmarkFingerprint(b *testing.B) {
	fp := newFingerprinter()
	b.ReportAllocs()
	for b.Loop() {
		fp.digest("mailhost01", "imap", "192.0.2.22:143", "alice", "alice-pw-6d1f2")
	}
}

// BenchmarkCacheLookup is a cache hit: the digest, then the lookup, as
// decidePlain does them.
func BenchmarkCacheLookup(b *testing.B) {
	fp := newFingerprinter()
	c := newLoginCache(time.Hour, 100_000)
	key := cacheKey{backend: "mailhost01", protocol: "imap", user: "alice"}
	digest := func() [32]byte {
		return fp.digest("mailhost01", "imap", "192.0.2.22:143", "alice", "alice-pw-6d1f2")
	}
	c.store(key, digest())
	b.Run("digest+hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !c.hit(key, digest()) {
				b.Fatal("miss")
			}
		}
	})
	sum := digest()
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !c.hit(key, sum) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("hit parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !c.hit(key, sum) {
					b.Error("miss")
					return
				}
			}
		})
	})
}

// benchHandler returns a handler set up as cmd/imapgate sets it up (the
// PHP seed's first-letter rule, default limits, metrics, an info-level text
// log), whose log goes nowhere and whose verifier says OK to everything.
func benchHandler(b *testing.B) *Handler {
	b.Helper()
	backends, err := backend.ParseBackends("mailhost01=192.0.2.22;mailhost02=192.0.2.33", backend.Ports{}, false)
	if err != nil {
		b.Fatal(err)
	}
	fl, err := backend.ParseFirstLetter("acfg=mailhost01", backends)
	if err != nil {
		b.Fatal(err)
	}
	limits := DefaultLimits
	return &Handler{
		Routes:   backend.Chain{{Name: backend.RuleFirstLetter, Selector: fl}, {Name: backend.RuleDefault, Selector: backend.Static{Backend: backends["mailhost02"]}}},
		Verifier: &fakeVerifier{outcome: imapcheck.OK},
		Resolver: fakeResolver{},
		CacheTTL: time.Hour,
		Limits:   &limits,
		Metrics:  NewMetrics(prometheus.NewRegistry()),
		Timeout:  12 * time.Second,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// discardWriter is the cheapest http.ResponseWriter, so that the handler's
// own allocations are what is counted.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkHandlerCacheHit is the whole handler answering from the cache:
// decoding, limits, selection, digest, lookup, answer and log line.
func BenchmarkHandlerCacheHit(b *testing.B) {
	h := benchHandler(b)
	r, err := http.NewRequest("GET", "/mail/auth.php", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Header = nginxHeader("Auth-Pass", "alice-pw-6d1f2")
	r.RemoteAddr = "127.0.0.1:40000"
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, r) // the check: fills the cache
	if got := w.h.Get("Auth-Status"); got != "OK" {
		b.Fatalf("Auth-Status %q", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
	if got := w.h.Get("Auth-Status"); got != "OK" {
		b.Fatalf("Auth-Status %q", got)
	}
}

// BenchmarkServeLoopback serves cache hits through a real net/http server,
// configured as cmd/imapgate configures it, over loopback, a new connection
// per request with nginx's HTTP/1.0 request: the cached-answer path of
// `make bench` in one process, for -cpuprofile. The client's work (dial,
// write, read) is in the profile too; the server's is under
// net/http.(*conn).serve.
func BenchmarkServeLoopback(b *testing.B) {
	h := benchHandler(b)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      h.Timeout + 5*time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(h.Logger.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Close()
		<-served
	}()
	addr := ln.Addr().String()
	req := []byte("GET /mail/auth.php HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n" +
		"Auth-User: alice\r\nAuth-Pass: alice-pw-6d1f2\r\nAuth-Protocol: imap\r\n" +
		"Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\nClient-Host: [UNAVAILABLE]\r\n\r\n")
	once := func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(req); err != nil {
			return err
		}
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if status != "HTTP/1.0 200 OK\r\n" {
			return io.ErrUnexpectedEOF
		}
		_, err = io.Copy(io.Discard, c)
		return err
	}
	if err := once(); err != nil { // the check: fills the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(16) // 32 clients on 2 cores, like wrk -c32
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := once(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
