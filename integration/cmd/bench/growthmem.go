package main

// The in-process half of the growth figure: the production types (the
// auth.Handler with its verified-login cache, state.Memory, the
// auth/http1 server) built in this process, so that a million entries
// can be made in seconds instead of through a million backend logins.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// entryFigures are the per-entry costs, keyed by entries.
type entryFigures struct {
	cacheBytes, ownerBytes, failBytes map[int]float64 // HeapAlloc delta after GC, per entry
	cacheNS, ownerNS, failNS          map[int]float64 // fill time per entry
	rpsSmall, rpsLarge                []float64       // cached req/s, one per round
	small, large                      int             // cached users of the two sides
	conns                             int             // wrk's connections
}

// acceptAll is a Verifier that accepts every login at once: the cache is
// filled through the handler's whole path, without a backend.
type acceptAll struct{}

func (acceptAll) Verify(context.Context, imapcheck.Request) (imapcheck.Outcome, error) {
	return imapcheck.OK, nil
}

// inProcHandler is an auth.Handler as the binary wires it (default
// limits and check slots), its cache big enough for entries, its one
// backend accepting everything, its log discarded.
func inProcHandler(entries int, limits bool) (*auth.Handler, error) {
	backends, err := backend.ParseBackendsWith("bench="+ipBackend, backend.Defaults{Ports: backend.Ports{IMAP: 143, POP3: 110, SMTP: 25}})
	if err != nil {
		return nil, err
	}
	h := &auth.Handler{
		Routes:              backend.Chain{{Name: backend.RuleDefault, Selector: backend.Static{Backend: backends["bench"]}}},
		Verifier:            acceptAll{},
		Resolver:            &backend.Resolver{},
		CacheTTL:            24 * time.Hour,
		CacheSize:           entries + 1,
		MaxChecks:           defaultMaxChecks,
		MaxChecksPerNetwork: 2,
		Timeout:             22 * time.Second,
		Logger:              slog.New(slog.DiscardHandler),
	}
	if limits {
		h.Limits = &auth.DefaultLimits
	}
	return h, nil
}

// cacheUser is the i-th cached user and its password.
func cacheUser(i int) (string, string) {
	return fmt.Sprintf("user%07d@example.org", i), fmt.Sprintf("pw-%08x", uint32(i)*2654435761)
}

// fillCache logs users 0..n-1 in through h.Serve, each from a network of
// its own, on two goroutines (the machine's cores).
func fillCache(ctx context.Context, h *auth.Handler, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := range 2 {
		wg.Go(func() {
			var w http1.ResponseWriter
			br := bufio.NewReaderSize(nil, 4096)
			remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
			for i := g; i < n; i += 2 {
				user, pass := cacheUser(i)
				br.Reset(bytes.NewReader(authRequestFrom(ipGrowthInProc, user, pass, fmt.Sprintf("10.%d.%d.7", i>>16&255, i>>8&255))))
				req, err := http1.ReadRequest(br, 16<<10, auth.RequestFields)
				if err != nil {
					errs <- err
					return
				}
				req.RemoteAddr = remote
				w.Reset()
				h.Serve(ctx, &w, req)
				if status, _ := http1.Header(w.Fields()).Get("Auth-Status"); status != "OK" {
					errs <- fmt.Errorf("in-process login %d: Auth-Status %q", i, status)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// heapAfterGC is HeapAlloc once the collector has run twice.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// measureEntries returns the heap bytes and the time per entry that fill
// makes, n entries in all, in what build returns.
func measureEntries(n int, build func() (any, error), fill func(any) error) (perEntry, nsPer float64, err error) {
	before := heapAfterGC()
	v, err := build()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := fill(v); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	after := heapAfterGC()
	runtime.KeepAlive(v)
	return (float64(after) - float64(before)) / float64(n), float64(took.Nanoseconds()) / float64(n), nil
}

// growthNet is the i-th network, a /24 of its own.
func growthNet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 0}), 24)
}

// entryFigure measures the per-entry costs at each size, then the cached
// requests/s with many cached users against few.
func (b *bench) entryFigure(ctx context.Context) (*entryFigures, error) {
	f := &entryFigures{cacheBytes: map[int]float64{}, ownerBytes: map[int]float64{}, failBytes: map[int]float64{},
		cacheNS: map[int]float64{}, ownerNS: map[int]float64{}, failNS: map[int]float64{}}
	for _, n := range growthSizes {
		var err error
		// The cache alone: no limits, so no owner marks beside it.
		f.cacheBytes[n], f.cacheNS[n], err = measureEntries(n,
			func() (any, error) { return inProcHandler(n, false) },
			func(v any) error { return fillCache(ctx, v.(*auth.Handler), n) })
		if err != nil {
			return nil, err
		}
		limits := state.DefaultLimits
		limits.MaxTracked = n
		f.ownerBytes[n], f.ownerNS[n], _ = measureEntries(n,
			func() (any, error) { return state.NewMemory(limits), nil },
			func(v any) error {
				m := v.(*state.Memory)
				for i := range n {
					m.Success(ctx, fmt.Sprintf("user%07d@example.org", i), growthNet(i))
				}
				return nil
			})
		f.failBytes[n], f.failNS[n], _ = measureEntries(n,
			func() (any, error) { return state.NewMemory(limits), nil },
			func(v any) error {
				m := v.(*state.Memory)
				for i := range n {
					user := fmt.Sprintf("user%07d@example.org", i)
					m.Failure(ctx, state.Attempt{User: user, Network: growthNet(i), Fingerprint: m.Fingerprint(user, "wrong")})
				}
				return nil
			})
		logf("growth, in process, %d entries: cache %.0f bytes (%.2f µs) an entry; owner mark %.0f bytes (%.2f µs); wrong login (pair, user and network counts) %.0f bytes (%.2f µs)",
			n, f.cacheBytes[n], f.cacheNS[n]/1000, f.ownerBytes[n], f.ownerNS[n]/1000, f.failBytes[n], f.failNS[n]/1000)
	}
	return f, b.cachedAtScale(ctx, f)
}

// cachedAtScale serves two in-process handlers through auth/http1, one
// with 1k cached users, one with 1M, and runs wrk on each, interleaved,
// every request for one of 1,000 users spread over the cache.
func (b *bench) cachedAtScale(ctx context.Context, f *entryFigures) error {
	f.small, f.large, f.conns = 1_000, growthSizes[len(growthSizes)-1], b.cfg.wrkConns
	type side struct {
		n      int
		addr   string
		script string
		into   *[]float64
	}
	sides := []*side{{n: f.small, addr: ipGrowthInProc + ":9180", into: &f.rpsSmall}, {n: f.large, addr: ipGrowthInProc + ":9181", into: &f.rpsLarge}}
	for _, s := range sides {
		h, err := inProcHandler(s.n, true)
		if err != nil {
			return err
		}
		if err := fillCache(ctx, h, s.n); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return err
		}
		srv := &http1.Server{Handler: h, Fields: auth.RequestFields, Logger: slog.New(slog.DiscardHandler)}
		go srv.Serve(ln)
		defer srv.Shutdown(context.Background())
		if s.script, err = b.spreadScript(s.n); err != nil {
			return err
		}
		user, pass := cacheUser(s.n - 1)
		if err := authOK(s.addr, authRequestFrom(ipGrowthInProc, user, pass, fmt.Sprintf("10.%d.%d.7", (s.n-1)>>16&255, (s.n-1)>>8&255))); err != nil {
			return fmt.Errorf("in-process server, %d cached: %w", s.n, err)
		}
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, s := range sides {
			res, err := runWrk(ctx, s.script, "http://"+s.addr+"/mail/auth.php", b.cfg.wrkThreads, b.cfg.wrkConns, b.cfg.wrkDuration)
			if err != nil {
				return err
			}
			if res.errors != "" {
				return fmt.Errorf("wrk on the in-process server with %d cached: %s", s.n, res.errors)
			}
			*s.into = append(*s.into, res.rps)
			logf("growth, cached answer round %d/%d, %d cached users: %.0f req/s", round, b.cfg.rounds, s.n, res.rps)
		}
	}
	return nil
}

// spreadScript writes a wrk script whose requests go round 1,000 of the n
// cached users, spread evenly over them (each from its own network, as
// it was cached).
func (b *bench) spreadScript(n int) (string, error) {
	const k = 1000
	var sb strings.Builder
	sb.WriteString("-- written by integration/cmd/bench: requests for users spread over the cache\nlocal reqs = {\n")
	for j := range k {
		i := j * (n / k)
		user, pass := cacheUser(i)
		fmt.Fprintf(&sb, "%q,\n", authRequestFrom(ipGrowthInProc, user, pass, fmt.Sprintf("10.%d.%d.7", i>>16&255, i>>8&255)))
	}
	sb.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
	path := fmt.Sprintf("%s/spread-%d.lua", b.env.Dir, n)
	return path, os.WriteFile(path, []byte(sb.String()), 0o644)
}

// print writes the in-process rows.
func (f *entryFigures) print(w io.Writer) {
	row := func(what string, bytes, ns map[int]float64) {
		small := growthSizes[0]
		for _, n := range growthSizes {
			fmt.Fprintf(w, "| %s, %s entries (in process, HeapAlloc after GC) | %.0f bytes, %.2f µs to add | %.0f bytes, %.2f µs (%s entries) | %.2f× | | |\n",
				what, thousands(float64(n)), bytes[n], ns[n]/1000, bytes[small], ns[small]/1000, thousands(float64(small)), ratio(bytes[n], bytes[small]))
		}
	}
	row("bytes per verified-login cache entry (through Handler.Serve, accept-all verifier)", f.cacheBytes, f.cacheNS)
	row("bytes per limiter owner mark (state.Memory.Success)", f.ownerBytes, f.ownerNS)
	row("bytes per wrong login, user and network of its own: 3 records, pair, user and network (state.Memory.Failure)", f.failBytes, f.failNS)
	rs, rl := median(f.rpsSmall), median(f.rpsLarge)
	fmt.Fprintf(w, "| cached answer, requests/s with %s cached users (in-process auth.Handler on auth/http1, filled through Serve; wrk c=%d as above, requests round 1,000 users spread over the cache) | %s | %s (%s cached users) | %.3f× | | |\n",
		thousands(float64(f.large)), f.conns, thousands(rl), thousands(rs), thousands(float64(f.small)), ratio(rl, rs))
}

// printRounds writes the in-process rounds.
func (f *entryFigures) printRounds(w io.Writer) {
	fmt.Fprintf(w, "- growth, in-process cached req/s: %d users %s; %d users %s\n", f.small, list(f.rpsSmall, "%.0f"), f.large, list(f.rpsLarge, "%.0f"))
}
