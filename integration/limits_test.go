package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// The guessing-limit scenarios run against Dovecots with their auth
// penalty on, as Debian ships them (and the README's trusted networks,
// which the harness's configuration has), each alone on an address of
// 127.0.40.0/24 so that its log counts only its own logins. Attackers
// connect from 127.0.40.100 and up, a network of their own; owners and
// other users from the harness's client addresses (127.0.2.0/24).
const (
	ipPenaltySequential = "127.0.40.10"
	ipPenaltyConcurrent = "127.0.40.11"
	ipPenaltyFlood      = "127.0.40.12"
	ipGatewaySequential = "127.0.40.20"
	ipGatewayConcurrent = "127.0.40.21"
	ipGatewayFlood      = "127.0.40.22"
)

// fromAddr is a dialer whose connections come from ip.
func fromAddr(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// startPenaltyGateway starts a Dovecot with its auth penalty on at
// backendIP, named name, and imapgate (with settings added) behind nginx
// at gatewayIP, routing every user to it. SMTP logins are checked on that
// Dovecot and relayed to the harness's relay stand-in.
func startPenaltyGateway(t *testing.T, name, backendIP, gatewayIP string, settings map[string]string) (*harness.Backend, *harness.Gateway) {
	t.Helper()
	e := requireEnv(t)
	be := startIsolatedBackend(t, name, backendIP, true)
	env := map[string]string{
		"IMAPGATE_BACKENDS": fmt.Sprintf("%s=imap://%s:143,pop3://%s:110,smtp://127.0.0.1:10025", name, backendIP, backendIP),
	}
	for k, v := range settings {
		env[k] = v
	}
	if _, ok := env["IMAPGATE_FIRST_LETTER"]; !ok {
		env["IMAPGATE_DEFAULT_BACKEND"] = name
	}
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{IP: gatewayIP, Env: env})
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Errorf("gateway %s: %v", gw.Name, err)
		}
		if t.Failed() {
			t.Logf("imapgate log (%s):\n%s", gw.Imapgate.LogPath, lastLines(gw.Imapgate.Output(), 40))
		}
	})
	return be, gw
}

// smtpAuth authenticates through addr with AUTH PLAIN and quits; the
// error carries the server's reply code and text.
func smtpAuth(ctx context.Context, d *net.Dialer, addr, user, pass string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := smtpAuthenticated(ctx, d, addr, user, pass)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Quit()
}

// dovecotRefusals counts the password checks Dovecot refused since offset
// for users for which match says true ("Password mismatch" or "unknown
// user"), once a login of barrierUser shows that every earlier line is in.
func dovecotRefusals(t *testing.T, be *harness.Backend, offset int64, barrierUser string, match func(user string) bool) int {
	t.Helper()
	dovecotCounts(t, be, offset, barrierUser, barrierUser)
	n := 0
	for _, l := range be.LogSince(offset) {
		if !strings.Contains(l, "Password mismatch") && !strings.Contains(l, "unknown user") {
			continue
		}
		// passwd-file(user,rip,<session>): …
		_, rest, ok := strings.Cut(l, "passwd-file(")
		if user, _, ok2 := strings.Cut(rest, ","); ok && ok2 && match(user) {
			n++
		}
	}
	return n
}

// waitOutcomes waits (a few seconds at most: imapgate's log is buffered)
// until imapgate has logged n login lines for user, and counts them by
// outcome.
func waitOutcomes(ctx context.Context, gw *harness.Gateway, user string, n int) map[string]int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		counts := loginOutcomes(gw, user)
		total := 0
		for _, c := range counts {
			total += c
		}
		if total >= n || ctx.Err() != nil {
			return counts
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loginOutcomes counts imapgate's login lines for user by outcome.
func loginOutcomes(gw *harness.Gateway, user string) map[string]int {
	counts := map[string]int{}
	for _, line := range gw.Imapgate.Lines() {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		if r.Get("msg") == "login" && r.Get("user") == user {
			counts[r.Get("outcome")]++
		}
	}
	return counts
}

// TestGuessesUnderDovecotPenalty: 40 distinct wrong passwords for one
// account from one network, one after another through nginx (every fourth
// over SMTP), against a Dovecot whose penalty delays the answers to that
// network: every one is answered as a wrong password (SMTP: 535, never
// 451, whatever came before), at most 10 reach Dovecot, and the owner
// gets in from another network meanwhile.
func TestGuessesUnderDovecotPenalty(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be, gw := startPenaltyGateway(t, "mailhost40", ipPenaltySequential, ipGatewaySequential, nil)
	ctx := ctxFor(t, 5*time.Minute)
	offset := be.LogOffset()
	attacker := fromAddr("127.0.40.100")
	start := time.Now()
	for i := range 40 {
		pass := gw.AddSecret(fmt.Sprintf("penalty-guess-%02d-amy", i))
		// A guess the backend checked is a wrong password (SMTP 535),
		// whatever came before; one the limits refused without asking it
		// is "too many" (454); none is an outage while Dovecot answers.
		if i%4 == 3 {
			err := smtpAuth(ctx, attacker, gw.SMTPAddr, "amy", pass)
			checked := err != nil && strings.Contains(err.Error(), "535") && strings.Contains(err.Error(), invalidText)
			throttled := err != nil && strings.Contains(err.Error(), "454") && strings.Contains(err.Error(), throttledText)
			if !checked && !throttled {
				t.Errorf("SMTP guess %d: %v, want 535 … %s or 454 … %s", i, err, invalidText, throttledText)
			}
		} else {
			err := imapLogin(ctx, attacker, gw.IMAPAddr, "amy", pass)
			if err == nil || imapErrorText(err) != invalidText && imapErrorText(err) != throttledText {
				t.Errorf("IMAP guess %d: %v, want NO %s or %s", i, err, invalidText, throttledText)
			}
		}
		if i == 20 {
			if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
				t.Errorf("the owner's login from another network during the attack: %v", err)
			}
		}
	}
	elapsed := time.Since(start)
	failures := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "amy" })
	outcomes := waitOutcomes(ctx, gw, "amy", 41)
	t.Logf("40 sequential guesses answered in %v; %d reached Dovecot; imapgate's outcomes for amy: %v",
		elapsed.Round(time.Second), failures, outcomes)
	if failures > 10 {
		t.Errorf("%d guesses reached Dovecot, want at most 10", failures)
	}
	if outcomes["temporary"] != 0 || outcomes["rejected"]+outcomes["delayed"]+outcomes["throttled"] != 40 {
		t.Errorf("imapgate's outcomes for amy: %v, want 40 rejected, delayed or throttled and no temporary", outcomes)
	}
}

// guessLoop makes n distinct wrong IMAP logins for user through gw, one
// after another, from d; it returns the answers that were not a refusal.
func guessLoop(ctx context.Context, gw *harness.Gateway, d *net.Dialer, user, tag string, n int) []error {
	var odd []error
	for i := range n {
		pass := gw.AddSecret(fmt.Sprintf("%s-%02d-%s", tag, i, user))
		err := imapLogin(ctx, d, gw.IMAPAddr, user, pass)
		if err == nil || !refused(err) {
			odd = append(odd, fmt.Errorf("%s guess %d: %v", user, i, err))
		}
	}
	return odd
}

// TestConcurrentGuessers: from one network, 32 guessers at once on one
// account (one address), then 64 guessers at once on 64 accounts (an
// address each), 3 distinct passwords each, against a Dovecot with its penalty on: checks
// in flight count before they end, so Dovecot sees no more than the pair
// limit (10) for the one account and the network limit (100) in all; users
// from other networks keep logging in meanwhile.
func TestConcurrentGuessers(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be, gw := startPenaltyGateway(t, "mailhost41", ipPenaltyConcurrent, ipGatewayConcurrent, nil)
	ctx := ctxFor(t, 5*time.Minute)
	offset := be.LogOffset()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var odd []error
	guess := func(d *net.Dialer, user string) {
		errs := guessLoop(ctx, gw, d, user, "crowd", 3)
		mu.Lock()
		odd = append(odd, errs...)
		mu.Unlock()
	}
	start := time.Now()
	for range 32 {
		wg.Go(func() { guess(fromAddr("127.0.40.101"), "amy") })
	}
	// The one account first, alone, so that its pair limit, not the
	// network's, is what holds its guessers.
	wg.Wait()
	for i := range 64 {
		wg.Go(func() { guess(fromAddr(fmt.Sprintf("127.0.40.%d", 110+i)), fmt.Sprintf("victim%02d", i)) })
	}
	var legit atomic.Int32
	stop := make(chan struct{})
	legitDone := make(chan error, 1)
	go func() { legitDone <- legitimateLogins(ctx, e, gw, stop, &legit) }()
	wg.Wait()
	close(stop)
	if err := <-legitDone; err != nil {
		t.Errorf("a legitimate login from another network during the attack: %v", err)
	}
	elapsed := time.Since(start)
	for _, err := range odd {
		t.Error(err)
	}
	amy := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "amy" })
	all := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "amy" || strings.HasPrefix(u, "victim") })
	t.Logf("96 concurrent guessers (288 guesses) done in %v: %d reached Dovecot for amy, %d in all; %d legitimate logins meanwhile",
		elapsed.Round(time.Second), amy, all, legit.Load())
	if amy > 10 {
		t.Errorf("32 concurrent guessers got %d checks of amy's password, want at most 10", amy)
	}
	if all > 100 {
		t.Errorf("the network's guessers got %d checks, want at most 100", all)
	}
}

// legitimateLogins logs bob, erin and zoe in through gw from other
// networks, over and over until stop is closed (at least once each).
func legitimateLogins(ctx context.Context, e *harness.Env, gw *harness.Gateway, stop <-chan struct{}, n *atomic.Int32) error {
	d := e.ClientDialer()
	for {
		for _, user := range []string{"bob", "erin", "zoe"} {
			if err := imapLogin(ctx, d, gw.IMAPAddr, user, e.Password("mailhost02", user)); err != nil {
				return fmt.Errorf("%s: %w", user, err)
			}
			n.Add(1)
		}
		select {
		case <-stop:
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestFloodKeepsCounts: 9 distinct wrong passwords for amy from one
// network, then 250,000 unrelated wrong logins (distinct users, 100,000
// networks; sent to imapgate as nginx sends them, since no mail client
// could come from so many addresses here): the attacked pair keeps its
// count, so its 10th guess reaches Dovecot, the 11th and 12th do not, and
// the owner still gets in.
func TestFloodKeepsCounts(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	be, gw := startPenaltyGateway(t, "mailhost42", ipPenaltyFlood, ipGatewayFlood, map[string]string{
		// amy, dave and the owner's account route to the backend; the
		// flood's users (x…) route nowhere: refused and counted like a
		// wrong password without a check, as a spray of invented names is.
		"IMAPGATE_FIRST_LETTER":    "abdez=mailhost42",
		"IMAPGATE_DEFAULT_BACKEND": "",
		// Warnings only: the flood's 250,000 refusals would fill the
		// harness's copy of the log; the throttled lines are warnings.
		"IMAPGATE_LOG_LEVEL": "warn",
	})
	ctx := ctxFor(t, 5*time.Minute)
	offset := be.LogOffset()
	// The attacker's network is 127.0.40.0/24; an address a guess, so that
	// Dovecot's penalty (per address) does not stretch the scenario.
	attacker := func(i int) *net.Dialer { return fromAddr(fmt.Sprintf("127.0.40.%d", 110+i)) }
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() { guessOnce(ctx, t, gw, attacker(i), "amy", fmt.Sprintf("flood-guess-%02d-amy", i)) })
	}
	wg.Wait()
	if n := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "amy" }); n != 9 {
		t.Fatalf("the first 9 guesses reached Dovecot %d times, want 9", n)
	}
	start := time.Now()
	sent, err := flood(ctx, gw.AuthAddr, 250_000, 100_000)
	if err != nil {
		t.Fatalf("flood: %v after %d requests", err, sent)
	}
	t.Logf("flood of %d wrong logins from 100,000 networks in %v", sent, time.Since(start).Round(time.Second))
	from := gw.Imapgate.Len()
	for i := 9; i < 12; i++ {
		guessOnce(ctx, t, gw, attacker(i), "amy", fmt.Sprintf("flood-guess-%02d-amy", i))
	}
	if n := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "amy" }); n != 10 {
		t.Errorf("after the flood, guesses 10–12 took amy's refusals in Dovecot's log to %d, want 10 (the 10th only)", n)
	}
	time.Sleep(time.Second) // imapgate's log is buffered
	throttled := 0
	for _, line := range gw.Imapgate.Lines()[from:] {
		r := harness.LoginRecord(harness.ParseLogLine(line))
		if r.Get("user") == "amy" && r.Get("outcome") == "throttled" {
			throttled++
		}
	}
	if throttled != 2 {
		t.Errorf("after the flood, %d of guesses 11 and 12 were throttled, want 2", throttled)
	}
	if err := imapLogin(ctx, e.ClientDialer(), gw.IMAPAddr, "amy", e.Password("mailhost02", "amy")); err != nil {
		t.Errorf("the owner's login after the flood: %v", err)
	}
}

// guessOnce makes one wrong IMAP login through gw and fails the test
// unless it is refused.
func guessOnce(ctx context.Context, t *testing.T, gw *harness.Gateway, d *net.Dialer, user, pass string) {
	gw.AddSecret(pass)
	if err := imapLogin(ctx, d, gw.IMAPAddr, user, pass); err == nil || imapErrorText(err) != invalidText && imapErrorText(err) != throttledText {
		t.Errorf("guess %s: %v, want NO %s or %s", pass, err, invalidText, throttledText)
	}
}

// flood sends n auth_http requests to addr as nginx sends them, each a
// wrong password for a distinct user, from nets distinct /24s (Client-IP),
// over 16 connections at a time from ten local addresses; it returns how
// many were answered with a refusal.
func flood(ctx context.Context, addr string, n, nets int) (int, error) {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		d := fromAddr(fmt.Sprintf("127.0.40.%d", 200+w%10))
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				if err := floodOne(d, addr, int(i), nets); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	return int(done.Load()), errors.Join(<-errs, ctx.Err())
}

// floodOne sends the i-th request of a flood and checks it is refused.
func floodOne(d *net.Dialer, addr string, i, nets int) error {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	net := i % nets
	fmt.Fprintf(conn, "GET /mail/auth.php HTTP/1.0\r\nHost: imapgate\r\nAuth-Method: plain\r\nAuth-User: x%07d\r\n"+
		"Auth-Pass: flood%07d\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: %d.%d.%d.7\r\n\r\n",
		i, i, 10+net>>16, net>>8&255, net&255)
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		if status, ok := strings.CutPrefix(line, "Auth-Status: "); ok {
			if s := strings.TrimSpace(status); s != "[AUTHENTICATIONFAILED] "+invalidText && s != "[UNAVAILABLE] "+throttledText {
				return fmt.Errorf("request %d: Auth-Status %q", i, s)
			}
			return nil
		}
	}
}

// TestDelayedChecksCount: with IMAPGATE_VERIFY_TIMEOUT below Dovecot's
// penalty, the checks Dovecot holds past it are logged as delayed (never
// temporary: Dovecot is up), answered "try later", and counted like wrong
// passwords, so the guesser still meets the pair limit; the shipped
// fail2ban filter counts every one of its attempts.
func TestDelayedChecksCount(t *testing.T) {
	t.Parallel()
	be, gw := startPenaltyGateway(t, "mailhost43", "127.0.40.13", "127.0.40.23", map[string]string{
		// Below Dovecot's penalty (up to 15 s), so that it holds some
		// answers past it; the default (20 s) outlasts the penalty.
		"IMAPGATE_VERIFY_TIMEOUT": "3s",
	})
	ctx := ctxFor(t, 4*time.Minute)
	offset := be.LogOffset()
	start := time.Now()
	if odd := guessLoop(ctx, gw, fromAddr("127.0.40.103"), "zoe", "delayed", 14); len(odd) > 0 {
		t.Error(errors.Join(odd...))
	}
	outcomes := waitOutcomes(ctx, gw, "zoe", 14)
	reached := dovecotRefusals(t, be, offset, "dave", func(u string) bool { return u == "zoe" })
	t.Logf("14 guesses in %v: imapgate's outcomes %v, %d reached Dovecot", time.Since(start).Round(time.Second), outcomes, reached)
	if outcomes["delayed"] == 0 || outcomes["temporary"] != 0 || outcomes["throttled"] != 4 || reached > 10 {
		t.Errorf("outcomes %v and %d refusals in Dovecot's log: want some delayed, none temporary, 4 throttled (the pair limit counts delayed checks) and at most 10 refusals", outcomes, reached)
	}
	matched := fail2banMatches(t, ctx, gw.Imapgate.LogPath, "127.0.40.103")
	if matched != 14 {
		t.Errorf("the fail2ban filter matched %d of the guesser's 14 attempts", matched)
	}
}

// fail2banMatches runs fail2ban-regex with the shipped filter on log and
// returns how many lines it matched, each of which must name client.
func fail2banMatches(t *testing.T, ctx context.Context, log, client string) int {
	t.Helper()
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fail2ban-regex missing (integration/install-deps.sh installs fail2ban)")
		}
		t.Skip("fail2ban-regex missing; run integration/install-deps.sh")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, f2b, "--print-all-matched", log, filepath.Join(root, "cmd/imapgate/contrib/fail2ban-filter.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Lines: (\d+) lines, \d+ ignored, (\d+) matched`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in fail2ban-regex output:\n%s", out)
	}
	matched, _ := strconv.Atoi(string(m[2]))
	_, lines, _ := strings.Cut(string(out), "Matched line(s):")
	lines, _, _ = strings.Cut(lines, "Missed line(s):")
	if n := strings.Count(lines, client); n != matched {
		t.Errorf("fail2ban matched %d lines, %d of them the guesser's:\n%s", matched, n, out)
	}
	return matched
}
