package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Addresses of the guessing and flood figures (127.0.40.0/24 is theirs).
const (
	ipGuessBackend = "127.0.40.50" // a Dovecot with its auth penalty on
	ipGuess        = "127.0.40.51" // imapgate of the guessing figures
	ipFlood        = "127.0.40.52" // imapgate of the flood figure
)

// guessingFigures are the attacks on imapgate's defaults against a Dovecot
// with its penalty on.
type guessingFigures struct {
	seqTook            time.Duration // 40 sequential distinct guesses, all answered
	seqReached         int           // of them, checks Dovecot refused
	idleP99, attackP99 time.Duration // a legitimate check, idle and under the crowd
	idleN, attackN     int
	crowdGuesses       int // guesses the 96 concurrent guessers sent
	crowdReachedOne    int // checks of the one account's password
	crowdReachedAll    int // checks of the crowd's, all accounts
	guessEvery         time.Duration
}

// floodFigures are imapgate's memory through a flood of unrelated wrong
// logins.
type floodFigures struct {
	requests      int
	took          time.Duration
	idleKB, hwmKB int // before, and the peak (VmHWM)
	afterKB       int // VmRSS once the flood is over
}

// guessing: (1) one client tries 40 distinct wrong passwords for one
// account, one after another; (2) from another network, 32 guessers on
// one account and 64 on 64 accounts, each guessing once every -guess-every
// (by default 50 ms, 20 a second as the penalty figure's one client:
// unpaced, the guessers and imapgate share this machine's two cores with
// the legitimate client, whose latency then measures the load generator), while
// another network's user logs in over and over: that user's check p99 is
// compared with its idle p99. Requests go to imapgate as nginx sends them.
func (b *bench) guessing(ctx context.Context, r *report) error {
	be, err := b.env.StartPenaltyBackend(ctx, "guesshost", ipGuessBackend, "mailhost02")
	if err != nil {
		return err
	}
	defer be.Close()
	addr := ipGuess + ":9180"
	settings := map[string]string{
		"IMAPGATE_BACKENDS":        "g=imap://" + ipGuessBackend + ":143,pop3://" + ipGuessBackend + ":110",
		"IMAPGATE_DEFAULT_BACKEND": "g",
		"IMAPGATE_CACHE_TTL":       "0", // every legitimate login is a check
	}
	for k, v := range b.cfg.extraEnv {
		settings[k] = v
	}
	p, err := b.env.StartImapgate(ctx, "imapgate-guessing", addr, settings)
	if err != nil {
		return err
	}
	defer p.Stop(15 * time.Second)
	var f guessingFigures
	offset := be.LogOffset()
	start := time.Now()
	for i := range 40 {
		if _, err := authOnceWithin(addr, authRequestFrom(ipGuess, "amy", fmt.Sprintf("seq-guess-%02d", i), "203.0.113.9"), time.Minute); err != nil {
			return fmt.Errorf("sequential guess %d: %w", i, err)
		}
	}
	f.seqTook = time.Since(start)
	f.seqReached = refusedFor(be.LogSince(offset), "amy")
	logf("guessing: 40 sequential guesses answered in %v, %d reached Dovecot", f.seqTook.Round(time.Millisecond), f.seqReached)
	if err := b.crowd(addr, be.LogOffset, be.LogSince, &f); err != nil {
		return err
	}
	r.guessing = &f
	return nil
}

// crowd measures the legitimate check idle and under the 96 concurrent
// guessers.
func (b *bench) crowd(addr string, logOffset func() int64, logSince func(int64) []string, f *guessingFigures) error {
	legitPass, _ := b.env.Backends["mailhost02"].Password("bob")
	legit := authRequestFrom(ipGuess, "bob", legitPass, "198.51.100.30")
	measure := func(d time.Duration) ([]time.Duration, error) { return measureOK(addr, legit, d) }
	idle, err := measure(8 * time.Second)
	if err != nil {
		return fmt.Errorf("idle check: %w", err)
	}
	offset := logOffset()
	stop := make(chan struct{})
	var sent atomic.Int32
	var wg sync.WaitGroup
	guesser := func(user, clientIP string, n int) {
		tick := time.NewTicker(b.cfg.guessEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent.Add(1)
			authOnceWithin(addr, authRequestFrom(ipGuess, user, fmt.Sprintf("crowd-%d-%04d", n, i), clientIP), time.Minute)
		}
	}
	for n := range 32 {
		wg.Go(func() { guesser("amy", "198.18.0.77", n) })
	}
	for n := range 64 {
		wg.Go(func() { guesser(fmt.Sprintf("victim%02d", n), fmt.Sprintf("198.18.0.%d", 100+n), 100+n) })
	}
	attack, err := measure(20 * time.Second)
	close(stop)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("check under attack: %w", err)
	}
	lines := logSince(offset)
	f.crowdGuesses, f.guessEvery = int(sent.Load()), b.cfg.guessEvery
	f.crowdReachedOne = refusedFor(lines, "amy")
	f.crowdReachedAll = f.crowdReachedOne
	for n := range 64 {
		f.crowdReachedAll += refusedFor(lines, fmt.Sprintf("victim%02d", n))
	}
	f.idleP99, f.attackP99, f.idleN, f.attackN = percentile(idle, 99), percentile(attack, 99), len(idle), len(attack)
	logf("guessing: legitimate check p99 idle %v (%d), under 96 concurrent guessers %v (%d); %d guesses, %d reached Dovecot (%d for the one account)",
		f.idleP99.Round(10*time.Microsecond), f.idleN, f.attackP99.Round(10*time.Microsecond), f.attackN,
		f.crowdGuesses, f.crowdReachedAll, f.crowdReachedOne)
	return nil
}

// refusedFor counts Dovecot's refusals of user's password checks.
func refusedFor(lines []string, user string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, "passwd-file("+user+",") && (strings.Contains(l, "Password mismatch") || strings.Contains(l, "unknown user")) {
			n++
		}
	}
	return n
}

// flood: an imapgate on its defaults takes 250,000 wrong logins for
// distinct users from 100,000 networks (users no rule routes, so no
// backend is asked, as a spray of invented names is); its peak RSS says
// what the bounded limits cost (TestFloodKeepsCounts shows that an
// attacked pair's count survives it).
func (b *bench) flood(ctx context.Context, r *report) error {
	addr := ipFlood + ":9180"
	settings := map[string]string{
		"IMAPGATE_BACKENDS":     "f=imap://" + ipGuessBackend + ":143",
		"IMAPGATE_FIRST_LETTER": "a=f",
		"IMAPGATE_LOG_LEVEL":    "warn",
	}
	for k, v := range b.cfg.extraEnv {
		settings[k] = v
	}
	p, err := b.env.StartImapgate(ctx, "imapgate-flood", addr, settings)
	if err != nil {
		return err
	}
	defer p.Stop(15 * time.Second)
	var f floodFigures
	if f.idleKB, _, err = procStatus(p.Pid()); err != nil {
		return err
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int32
	const total, nets = 250_000, 100_000
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
				n := int(i) % nets
				req := authRequestFrom(ipFlood, fmt.Sprintf("x%07d", i), fmt.Sprintf("flood%07d", i),
					fmt.Sprintf("%d.%d.%d.7", 10+n>>16, n>>8&255, n&255))
				if s, err := authOnce(addr, req); err != nil || s == "OK" {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	f.requests, f.took = total, time.Since(start)
	if failed.Load() > 0 {
		return fmt.Errorf("%d flood requests not refused", failed.Load())
	}
	if f.afterKB, f.hwmKB, err = procStatus(p.Pid()); err != nil {
		return err
	}
	logf("flood: %d wrong logins from %d networks in %v; RSS %d MiB before, peak %d MiB, %d MiB after",
		total, nets, f.took.Round(time.Millisecond), f.idleKB/1024, f.hwmKB/1024, f.afterKB/1024)
	r.flood = &f
	return nil
}
