package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Addresses of the penalty figure.
const (
	ipPenaltyBackend = "127.0.0.13" // a Dovecot with its auth penalty on
	ipPenalty        = "127.0.3.7"  // its imapgates
)

// penaltyFigures are one variant's legitimate check latencies, idle and
// while one client guesses.
type penaltyFigures struct {
	name                     string
	idleP99, attackP99       time.Duration
	idleN, attackN, guessesN int
	reached                  int // guesses that reached Dovecot
}

// penalty: with Dovecot's per-IP auth penalty on (as Dovecot ships), one
// client guesses a user's password 20 times a second while another user
// logs in; the legitimate check's p99 is compared with its idle p99. Run
// with imapgate's defaults (client address forwarded, limits on), and
// without forwarding, to show what each defence does.
func (b *bench) penalty(ctx context.Context, r *report) error {
	be, err := b.env.StartPenaltyBackend(ctx, "penaltyhost", ipPenaltyBackend, "mailhost02")
	if err != nil {
		return err
	}
	defer be.Close()
	legitPass, _ := be.Password("bob")
	for i, v := range []struct {
		name  string
		extra map[string]string
	}{
		{"defaults (client address forwarded, limits on)", nil},
		{"IMAPGATE_FORWARD_CLIENT_IP=false", map[string]string{"IMAPGATE_FORWARD_CLIENT_IP": "false"}},
	} {
		settings := map[string]string{
			"IMAPGATE_BACKENDS":        "p=imap://" + ipPenaltyBackend + ":143,pop3://" + ipPenaltyBackend + ":110",
			"IMAPGATE_DEFAULT_BACKEND": "p",
			"IMAPGATE_CACHE_TTL":       "0", // every legitimate login is a check
			"IMAPGATE_VERIFY_TIMEOUT":  "30s",
		}
		for k, val := range v.extra {
			settings[k] = val
		}
		addr := fmt.Sprintf("%s:%d", ipPenalty, 9180+i)
		p, err := b.env.StartImapgate(ctx, fmt.Sprintf("imapgate-penalty%d", i), addr, settings)
		if err != nil {
			return err
		}
		legit := authRequestFrom(ipPenalty, "bob", legitPass, "198.51.100.30")
		measure := func(d time.Duration) ([]time.Duration, error) { return measureOK(addr, legit, d) }
		offset := be.LogOffset()
		idle, err := measure(8 * time.Second)
		if err != nil {
			p.Stop(15 * time.Second)
			return fmt.Errorf("idle check: %w", err)
		}
		// One client, 20 distinct wrong passwords a second, each on a
		// connection of its own, as nginx would send them.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var guesses int
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				guesses++
				req := authRequestFrom(ipPenalty, "amy", fmt.Sprintf("guess-%d-%04d", i, n), "203.0.113.9")
				wg.Go(func() { authOnce(addr, req) })
			}
		})
		attack, err := measure(8 * time.Second)
		close(stop)
		wg.Wait()
		p.Stop(15 * time.Second)
		if err != nil {
			return fmt.Errorf("check under attack: %w", err)
		}
		reached := 0
		for _, l := range be.LogSince(offset) {
			if containsAll(l, "(amy,", "Password mismatch") {
				reached++
			}
		}
		f := penaltyFigures{name: v.name, idleP99: percentile(idle, 99), attackP99: percentile(attack, 99),
			idleN: len(idle), attackN: len(attack), guessesN: guesses, reached: reached}
		logf("penalty, %s: legitimate check p99 idle %v (%d), under attack %v (%d); %d guesses, %d reached Dovecot",
			v.name, f.idleP99.Round(10*time.Microsecond), f.idleN, f.attackP99.Round(10*time.Microsecond), f.attackN, guesses, reached)
		r.penalty = append(r.penalty, f)
	}
	return nil
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
