package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the resilience figure (127.0.60.x, the fault scenarios'
// range; the bench's own imapgates are on 127.0.3.x).
const (
	ipHostileBench   = "127.0.60.150" // the hostile backends
	ipResilience     = "127.0.60.151" // imapgate facing them, then the flood
	floodBenchLimit  = 20000          // imapgate's descriptors, as in the field report
	floodBenchConns  = 24000
	floodBenchHold   = 15 * time.Second
	hostileLogins    = 200
	hostileLoginConc = 50
)

// resilienceFigures is what the resilience figure measured.
type resilienceFigures struct {
	hostileIdle, hostileHWM float64 // MiB
	hostileAnswers          map[string]int
	floodIdle, floodHWM     float64 // MiB
	floodMax, floodOpenPeak float64
	floodFDPeak             int
	floodOK, floodAll       int
	floodP50, floodP99      time.Duration
	floodDropped            map[string]float64
	floodStats              harness.FloodStats
}

// resilience measures imapgate's peak RSS (VmHWM) while it checks logins
// on backends that never stop sending (a greeting, a reply to LOGIN, a
// CAPA listing), and while 24,000 slow connections press on its 20,000
// descriptors, with cached logins asked all along.
func (b *bench) resilience(ctx context.Context, r *report) error {
	r.resilience = &resilienceFigures{}
	if err := b.hostileFigure(ctx, r.resilience); err != nil {
		return err
	}
	return b.floodFigure(ctx, r.resilience)
}

func (b *bench) hostileFigure(ctx context.Context, f *resilienceFigures) error {
	at := func(port int) string { return fmt.Sprintf("%s:%d", ipHostileBench, port) }
	for port, script := range map[int]harness.Script{
		143: harness.EndlessGreeting("* OK "),
		110: harness.EndlessGreeting("+OK "),
		1143: harness.IMAPUntil("LOGIN", func(c net.Conn, _ string) {
			io.WriteString(c, "* OK ")
			harness.Endless(c)
		}),
		1110: harness.POP3Until("CAPA", harness.EndlessLines),
	} {
		h, err := harness.StartHostile(at(port), script)
		if err != nil {
			return err
		}
		defer h.Close()
	}
	addr := ipResilience + ":9180"
	p, err := b.env.StartImapgate(ctx, "imapgate-hostile", addr, map[string]string{
		"IMAPGATE_BACKENDS": fmt.Sprintf("greeting=imap://%s,pop3://%s;reply=imap://%s,pop3://%s",
			at(143), at(110), at(1143), at(1110)),
		"IMAPGATE_FIRST_LETTER":    "g=greeting",
		"IMAPGATE_DEFAULT_BACKEND": "reply",
		"IMAPGATE_PROBE_INTERVAL":  "1s",
	})
	if err != nil {
		return err
	}
	defer p.Stop(15 * time.Second)
	idle, _, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	f.hostileAnswers = map[string]int{}
	var mu sync.Mutex
	closedLoop(hostileLoginConc, time.Minute, hostileLogins/hostileLoginConc, func(w, i int) error {
		// The greeting's backend (g…) or the reply's; a user and a network
		// of its own each, so that the guessing limits (which count checks
		// in flight per user and per network) let every one through.
		user := fmt.Sprintf("%c%d-%d", "gr"[(w+i)%2], w, i)
		status, err := authOnce(addr, authRequestFrom(ipResilience, user, fmt.Sprintf("pw-%d-%d", w, i), fmt.Sprintf("10.%d.%d.7", w, i)))
		if err != nil {
			status = "error: " + err.Error()
		}
		mu.Lock()
		f.hostileAnswers[status]++
		mu.Unlock()
		return err
	})
	_, hwm, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	f.hostileIdle, f.hostileHWM = float64(idle)/1024, float64(hwm)/1024
	logf("hostile backends: %d logins, answers %v, RSS idle %.1f MiB, peak (VmHWM) %.1f MiB", hostileLogins, f.hostileAnswers, f.hostileIdle, f.hostileHWM)
	return nil
}

func (b *bench) floodFigure(ctx context.Context, f *resilienceFigures) error {
	addr := ipResilience + ":9180"
	a := b.accounts[0]
	p, err := b.env.StartImapgateLimited(ctx, "imapgate-flood", addr, map[string]string{
		"IMAPGATE_BACKENDS":        "bench=" + ipBackend,
		"IMAPGATE_DEFAULT_BACKEND": "bench",
	}, floodBenchLimit)
	if err != nil {
		return err
	}
	defer p.Stop(15 * time.Second)
	req := authRequestBytes(ipResilience, a.User, a.Password)
	if err := authOK(addr, req); err != nil { // cached from here on
		return err
	}
	idle, _, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	flood, err := b.env.StartFlood(ctx, &harness.Flood{Target: addr, Conns: floodBenchConns, Interval: time.Second,
		Sources: []string{"127.0.60.160", "127.0.60.161", "127.0.60.162", "127.0.60.163"}})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			flood.Stop()
		}
	}()
	for flood.Stats().Opened < floodBenchConns && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	logf("flood: %v", flood.Stats())
	var wg sync.WaitGroup
	done := make(chan struct{})
	var peakOpen float64
	var peakFDs int
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
			}
			open, _ := metric(addr, "imapgate_connections_open")
			peakOpen, peakFDs = max(peakOpen, open), max(peakFDs, openFDs(p.Pid()))
		}
	})
	l := closedLoop(4, floodBenchHold, 0, func(int, int) error { return authOK(addr, req) })
	close(done)
	f.floodMax, _ = metric(addr, "imapgate_connections_max")
	f.floodDropped = map[string]float64{}
	for _, reason := range []string{"slow", "evicted", "full"} {
		f.floodDropped[reason], _ = metric(addr, `imapgate_connections_dropped_total{reason="`+reason+`"}`)
	}
	wg.Wait()
	f.floodStats, stopped = flood.Stop(), true
	_, hwm, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	f.floodIdle, f.floodHWM = float64(idle)/1024, float64(hwm)/1024
	f.floodOK, f.floodAll = len(l.lat), len(l.lat)+l.fails
	slices.Sort(l.lat)
	f.floodP50, f.floodP99 = percentile(l.lat, 50), percentile(l.lat, 99)
	f.floodOpenPeak, f.floodFDPeak = peakOpen, peakFDs
	logf("flood held %v: %d/%d cached logins OK (p50 %v, p99 %v), RSS idle %.1f MiB, peak %.1f MiB, connections at most %.0f (cap %.0f), fds at most %d, dropped %v; %v",
		floodBenchHold, f.floodOK, f.floodAll, f.floodP50, f.floodP99, f.floodIdle, f.floodHWM, peakOpen, f.floodMax, peakFDs, f.floodDropped, f.floodStats)
	if l.fails > 0 {
		logf("%d of %d cached logins failed during the flood, first: %v", l.fails, f.floodAll, l.firstEr)
	}
	return nil
}

// print writes the resilience figure's rows.
func (f *resilienceFigures) print(w io.Writer) {
	fmt.Fprintf(w, "| peak RSS (VmHWM), %d logins (c=%d) on backends that never stop sending: a greeting, a reply to LOGIN, a CAPA listing | %.1f MiB | %.1f MiB (idle) | | — | |\n",
		hostileLogins, hostileLoginConc, f.hostileHWM, f.hostileIdle)
	fmt.Fprintf(w, "| peak RSS (VmHWM), %s slow connections (a byte a second) against %s descriptors, %v | %.1f MiB | %.1f MiB (idle) | | — | |\n",
		thousands(floodBenchConns), thousands(floodBenchLimit), floodBenchHold, f.floodHWM, f.floodIdle)
	fmt.Fprintf(w, "| … cached logins answered OK meanwhile (c=4), p50 / p99 | %d / %d, %.2f / %.2f ms | | | all | %s |\n",
		f.floodOK, f.floodAll, ms(f.floodP50), ms(f.floodP99), met(f.floodOK == f.floodAll && f.floodAll > 0))
}

// printRounds writes the figure's details.
func (f *resilienceFigures) printRounds(w io.Writer) {
	fmt.Fprintf(w, "- resilience: hostile answers %v; flood: connections at most %.0f (cap %.0f), descriptors at most %d, dropped %v, %v\n",
		f.hostileAnswers, f.floodOpenPeak, f.floodMax, f.floodFDPeak, f.floodDropped, f.floodStats)
}
