package auth

// Benchmarks of the per-request hot path, with allocation counts:
//
//	go test -run '^$' -bench . -benchmem ./auth
//	go test -run '^$' -bench ServeLoopback -cpuprofile cpu.out ./auth && go tool pprof -top auth.test cpu.out

import (
	"github.com/imapgate/imapgate/auth/state"

	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkParseRequest reads a request head as nginx sends it and
// decodes it as an auth_http request: the production parser, without the
// network.
func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		raw  string
	}{
		{"plain", nginxRequest()},
		{"escaped password", strings.Replace(nginxRequest(), "p%20a+ss%25", "p%20a+s%25s%20word", 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			src := strings.NewReader(bc.raw)
			r := bufio.NewReaderSize(src, 4096)
			for b.Loop() {
				src.Reset(bc.raw)
				r.Reset(src)
				head, err := http1.ReadRequest(r, 16<<10, RequestFields)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := parseRequest(head.Header); err != nil {
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
	fp := state.NewDigester(nil)
	b.ReportAllocs()
	for b.Loop() {
		fp.Sum("mailhost01", "imap", "192.0.2.22:143", "alice", "alice-pw-6d1f2")
	}
}

// BenchmarkCacheLookup is a cache hit: the digest, then the lookup, as
// decidePlain does them.
func BenchmarkCacheLookup(b *testing.B) {
	fp := state.NewDigester(nil)
	c := newLoginCache(time.Hour, 100_000)
	key := cacheKey{backend: "mailhost01", protocol: "imap", user: "alice"}
	digest := func() [32]byte {
		return fp.Sum("mailhost01", "imap", "192.0.2.22:143", "alice", "alice-pw-6d1f2")
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
	backends, err := backend.ParseBackendsWith("mailhost01=192.0.2.22;mailhost02=192.0.2.33", backend.Defaults{})
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

// BenchmarkHandlerCacheHit is the whole handler answering from the cache:
// decoding, limits, selection, digest, lookup, answer and log line.
func BenchmarkHandlerCacheHit(b *testing.B) {
	h := benchHandler(b)
	head, err := http1.ReadRequest(bufio.NewReader(strings.NewReader(nginxRequest())), 16<<10, RequestFields)
	if err != nil {
		b.Fatal(err)
	}
	head.RemoteAddr = testPeer
	var w http1.ResponseWriter
	serve := func() {
		w.Reset()
		h.Serve(context.Background(), &w, head)
		if len(w.Fields()) == 0 || w.Fields()[0].Value != "OK" {
			b.Fatalf("answer %v", w.Fields())
		}
	}
	serve() // the check: fills the cache
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
}

// BenchmarkServeLoopback serves cache hits over loopback, a new connection
// per request with nginx's HTTP/1.0 request, through imapgate's own server
// and through net/http, configured as cmd/imapgate configures them: the
// cached-answer path of make bench in one process, for -cpuprofile. The
// client's work (dial, write, read) is in the profile too.
func BenchmarkServeLoopback(b *testing.B) {
	for _, bc := range []struct {
		name  string
		serve func(h *Handler, ln net.Listener) (stop func())
	}{
		{"http1", func(h *Handler, ln net.Listener) func() {
			srv := &http1.Server{Handler: h, Fields: RequestFields, MaxHeaderBytes: 16 << 10}
			go srv.Serve(ln)
			return func() { srv.Shutdown(context.Background()) }
		}},
		{"net-http", func(h *Handler, ln net.Listener) func() {
			srv := &http.Server{Handler: http1.NetHTTP(h, RequestFields), ReadHeaderTimeout: 5 * time.Second,
				MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(h.Logger.Handler(), slog.LevelWarn)}
			go srv.Serve(ln)
			return func() { srv.Close() }
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := benchHandler(b)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer bc.serve(h, ln)()
			benchLoopback(b, ln.Addr().String())
		})
	}
}

// benchLoopback asks addr for cached answers from 32 clients at once, each
// request on a new connection.
func benchLoopback(b *testing.B, addr string) {
	req := []byte(strings.Replace(nginxRequest(), "p%20a+ss%25", "alice-pw-6d1f2", 1))
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
		if !strings.HasSuffix(status, " 200 OK\r\n") {
			return fmt.Errorf("status line %q", status)
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
