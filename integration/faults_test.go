package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// clientIP is the n-th client address of the fault scenarios (n < 25):
// TestHostileBackends takes 0-9, TestTLSHandshakeStalls 10-11,
// TestBackendComesBack 12, TestBackendNameStopsResolving 13.
func clientIP(n int) string { return fmt.Sprintf("127.0.60.%d", 230+n) }

// keepWorking logs alice (mailhost01) and bob (mailhost02) in through gw
// over IMAP and POP3, again and again, until stop is closed, and reports
// every failure: the users a fault must not touch.
func keepWorking(t *testing.T, gw *harness.Gateway, stop <-chan struct{}) (wait func() int) {
	return keepWorkingAs(t, gw, stop, "alice", "mailhost01", "bob", "mailhost02")
}

// keepWorkingAs is keepWorking with the users given as user, host pairs.
func keepWorkingAs(t *testing.T, gw *harness.Gateway, stop <-chan struct{}, userHost ...string) (wait func() int) {
	e := requireEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	logins := 0
	for i := 0; i+1 < len(userHost); i += 2 {
		user, pass := userHost[i], e.Password(userHost[i+1], userHost[i])
		for _, proto := range []string{"imap", "pop3"} {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), proto, user, pass); err != nil {
						t.Errorf("%s over %s while the fault lasted: %v", user, proto, err)
						return
					}
					mu.Lock()
					logins++
					mu.Unlock()
					time.Sleep(200 * time.Millisecond)
				}
			})
		}
	}
	return func() int { wg.Wait(); return logins }
}

// temporaryCode is the response code of a temporary failure by protocol.
var temporaryCode = map[string]string{"imap": "UNAVAILABLE", "pop3": "SYS/TEMP", "smtp": "451"}

// TestHostileBackends (the fault matrix, hostile half): backends of the
// test's own that greet without end, answer LOGIN (or CAPA) without end,
// hang up in the middle of a login, or greet and then never answer. The
// user of each is told "temporary" with its code, the log says why, the
// stalling backend turns degraded after three clients' checks stalled
// and fails fast after that, other users keep logging in throughout, and
// imapgate's memory, goroutines and descriptors come back to where they
// were.
func TestHostileBackends(t *testing.T) {
	t.Parallel()
	requireEnv(t)
	at := func(port int) string { return net.JoinHostPort(ipHostile, strconv.Itoa(port)) }
	startHostile(t, at(143), harness.EndlessGreeting("* OK "))
	startHostile(t, at(110), harness.EndlessGreeting("+OK "))
	startHostile(t, at(1143), harness.IMAPUntil("LOGIN", func(c net.Conn, _ string) {
		io.WriteString(c, "* OK ")
		harness.Endless(c)
	}))
	// A multi-line answer whose lines are short enough, but never end.
	startHostile(t, at(1110), harness.POP3Until("CAPA", harness.EndlessLines))
	startHostile(t, at(2143), harness.IMAPUntil("LOGIN", func(c net.Conn, _ string) { io.WriteString(c, "* OK half a rep") }))
	startHostile(t, at(2110), harness.POP3Until("PASS", func(c net.Conn) { io.WriteString(c, "+O") }))
	startHostile(t, at(3143), harness.GreetThenStall("* OK [CAPABILITY IMAP4rev1] ready"))
	startHostile(t, at(3110), harness.GreetThenStall("+OK ready"))
	spec := func(imap, pop3 int) string { return fmt.Sprintf("imap://%s,pop3://%s", at(imap), at(pop3)) }
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipHostileGateway, Env: map[string]string{
		"IMAPGATE_BACKENDS": fmt.Sprintf("mailhost01=%s;mailhost02=%s;greeting=%s;reply=%s;hangup=%s;stall=%s",
			harness.IPMailhost01, harness.IPMailhost02, spec(143, 110), spec(1143, 1110), spec(2143, 2110), spec(3143, 3110)),
		"IMAPGATE_FIRST_LETTER":    "acfg=mailhost01;h=greeting;r=reply;u=hangup;x=stall",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
		// A stalled check costs the whole timeout: 3 s keeps the scenario
		// short.
		"IMAPGATE_VERIFY_TIMEOUT": "3s",
	}})
	e := requireEnv(t)
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "alice", e.Password("mailhost01", "alice")); err != nil {
		t.Fatalf("alice before the faults: %v", err)
	}
	base := usageOf(t, gw)
	from := gw.Imapgate.Len()
	stop := make(chan struct{})
	others := keepWorking(t, gw, stop)

	var wg sync.WaitGroup
	n := 0
	for _, c := range []struct{ user, proto string }{
		{"hank", "imap"}, {"hank", "pop3"}, {"rita", "imap"}, {"rita", "pop3"},
		{"ursula", "imap"}, {"ursula", "pop3"}, {"xavier", "imap"}, {"xavier", "imap"}, {"xavier", "imap"},
	} {
		ip := clientIP(n)
		n++
		wg.Go(func() {
			// A password of each client's own: identical checks would be
			// one shared check.
			err := clientLogin(t, gw, dialerFrom(ip), c.proto, c.user, c.user+"-password-"+ip)
			wantCode(t, c.user, c.proto, err, temporaryCode[c.proto], temporaryText)
		})
	}
	wg.Wait()
	waitLoggedReason(t, gw, from, "hank", "backend sent more than a check reads", "backend down (last probe failed)")
	waitLoggedReason(t, gw, from, "rita", "backend sent more than a check reads")
	waitLoggedReason(t, gw, from, "ursula", "backend unavailable")
	waitLoggedReason(t, gw, from, "xavier", "backend stopped answering")

	// Three clients' checks stalled: degraded, shown, and failing fast.
	if code, body := getPath(t, gw, "/readyz"); code != 503 || !strings.Contains(body, "stall degraded") {
		t.Errorf("/readyz = %d %q, want 503 naming stall degraded", code, body)
	}
	if v := scrape(t, gw)[`imapgate_backend_degraded{backend="stall"}`]; v != 1 {
		t.Errorf("imapgate_backend_degraded{backend=\"stall\"} = %v, want 1", v)
	}
	at4 := gw.Imapgate.Len()
	err := clientLogin(t, gw, dialerFrom(clientIP(n)), "pop3", "xavier", "xavier-password")
	wantCode(t, "xavier once degraded", "pop3", err, "SYS/TEMP", temporaryText)
	waitLoggedReason(t, gw, at4, "xavier", "backend degraded (greets, but logins stall)")

	close(stop)
	t.Logf("%d logins of other users while the hostile backends were asked", others())
	checkBaseline(t, gw, base)
}

// TestTLSHandshakeStalls (fault matrix): a backend whose TLS port accepts
// and never answers the handshake costs each check its timeout and no
// more, is answered "temporary", and other users' TLS checks go on.
func TestTLSHandshakeStalls(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.CAFile == "" {
		t.Skip("external mode without " + harness.EnvCAFile)
	}
	at := func(port int) string { return net.JoinHostPort(ipStalling, strconv.Itoa(port)) }
	startHostile(t, at(143), harness.GreetThenStall("* OK [CAPABILITY IMAP4rev1] ready"))
	startHostile(t, at(993), harness.Stall)
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipTLSGateway, Env: map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;mailhost02=%s;tls=imap://%s,imaps://%s", harness.IPMailhost01, harness.IPMailhost02, at(143), at(993)),
		"IMAPGATE_FIRST_LETTER":    "acfg=mailhost01;t=tls",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
		"IMAPGATE_VERIFY_TLS":      "tls",
		"IMAPGATE_VERIFY_CA_FILE":  e.CAFile,
		// As in TestHostileBackends: a stall costs the timeout.
		"IMAPGATE_VERIFY_TIMEOUT": "3s",
	}})
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "alice", e.Password("mailhost01", "alice")); err != nil {
		t.Fatalf("alice before the fault: %v", err)
	}
	base := usageOf(t, gw)
	from := gw.Imapgate.Len()
	stop := make(chan struct{})
	others := keepWorking(t, gw, stop)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			err := clientLogin(t, gw, dialerFrom(clientIP(10+i)), "imap", "tina", fmt.Sprintf("tinas-password-%d", i))
			wantCode(t, "tina", "imap", err, "UNAVAILABLE", temporaryText)
		})
	}
	wg.Wait()
	if r := waitLoggedReason(t, gw, from, "tina", "backend stopped answering"); r != nil && !strings.Contains(r.Get("reply"), "TLS handshake") {
		t.Errorf("the log does not say the TLS handshake stalled: %q", r.Get("reply"))
	}
	close(stop)
	t.Logf("%d logins of other users meanwhile", others())
	checkBaseline(t, gw, base)
}

// TestBackendComesBack: a Dovecot stopped and started again is used by
// the first login one second after it greets again, without waiting for
// the next probe (left at its default of 5 s): while a backend is marked
// down, a login may try it itself.
func TestBackendComesBack(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: the harness cannot stop an external backend")
	}
	ctx := ctxFor(t, 3*time.Minute)
	be, err := e.StartExtraBackend(ctx, "mailhost60", ipComeback, "mailhost02")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipComebackGateway, Env: map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost60=" + ipComeback,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost60",
	}})
	bob, dave := e.Password("mailhost02", "bob"), e.Password("mailhost02", "dave")
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "bob", bob); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	from := gw.Imapgate.Len()
	if err := be.Stop(); err != nil {
		t.Fatal(err)
	}
	waitBackendLine(t, gw, from, "backend down", "mailhost60", "imap")
	err = clientLogin(t, gw, dialerFrom(clientIP(12)), "imap", "dave", dave)
	wantCode(t, "dave during the outage", "imap", err, "UNAVAILABLE", temporaryText)

	if err := be.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitIMAPGreeting(ctx, net.JoinHostPort(ipComeback, "143")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, proto := range []string{"imap", "pop3"} {
		if err := clientLogin(t, gw, dialerFrom(clientIP(12)), proto, "dave", dave); err != nil {
			t.Errorf("%s login one second after the backend greets again: %v", proto, err)
		}
	}
}

// waitIMAPGreeting waits until addr greets with "* OK".
func waitIMAPGreeting(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "* OK") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never greeted again: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestUsersFileUnderFire (fault matrix): a users file of 20,003 lines is
// rewritten in place again and again while SIGHUPs arrive every 20 ms,
// then deleted, then replaced by a directory. No table torn by a rewrite
// is ever installed (alice and bob, on the last lines, are never refused
// as wrong passwords), a file that is gone or not a file keeps the last
// good table and says why, and a file renamed into place is read.
func TestUsersFileUnderFire(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	var b strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&b, "filler%05d mailhost01\n", i)
	}
	b.WriteString("alice mailhost01\nbob mailhost02\nsam mailhost01\n")
	content := b.String()
	users := writeFile(t, "users", content)
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipUsersGateway, Env: map[string]string{
		"IMAPGATE_BACKENDS":   fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_USERS_FILE": users,
	}})
	ctx := ctxFor(t, 2*time.Minute)
	alice, bob := e.Password("mailhost01", "alice"), e.Password("mailhost02", "bob")
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "alice", alice); err != nil {
		t.Fatalf("alice before the storm: %v", err)
	}
	base := usageOf(t, gw)

	storm, stopStorm := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	for _, u := range []struct{ user, pass string }{{"alice", alice}, {"bob", bob}} {
		wg.Go(func() {
			for storm.Err() == nil {
				h, err := gw.AuthRequest(ctx, "imap", u.user, u.pass, nil)
				if err != nil {
					t.Errorf("%s during the storm: %v", u.user, err)
					return
				}
				mu.Lock()
				answers[h.Get("Auth-Status")]++
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for storm.Err() == nil {
			if err := gw.Imapgate.Signal(syscall.SIGHUP); err != nil {
				t.Errorf("SIGHUP: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	// Rewrites in place as a careless script would make them: truncate,
	// then the lines a few KiB at a time.
	for range 8 {
		rewriteInPlace(t, users, content)
		time.Sleep(300 * time.Millisecond)
	}
	stopStorm()
	wg.Wait()
	if len(answers) != 1 || answers["OK"] == 0 {
		t.Errorf("answers to the right passwords during the storm: %v, want only OK", answers)
	}
	t.Logf("answers during the storm: %v", answers)

	for _, step := range []struct {
		name, want string
		do         func() error
	}{
		{"deleted", "no such file", func() error { return os.Remove(users) }},
		{"replaced by a directory", "not a regular file", func() error { return os.Mkdir(users, 0o755) }},
	} {
		from := gw.Imapgate.Len()
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		gw.Imapgate.Signal(syscall.SIGHUP)
		if _, _, err := gw.Imapgate.WaitLine(ctx, from, func(l string) bool {
			r := harness.LoginRecord(harness.ParseLogLine(l))
			return strings.HasPrefix(r.Get("msg"), "users file not reloaded") && strings.Contains(r.Get("err"), step.want)
		}); err != nil {
			t.Errorf("users file %s: no log line saying %q: %v", step.name, step.want, err)
		}
		for _, proto := range []string{"imap", "pop3"} {
			if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), proto, "bob", bob); err != nil {
				t.Errorf("bob over %s with the users file %s: %v", proto, step.name, err)
			}
		}
	}
	// Back, by rename, with sam (the same password on both hosts) moved:
	// read without a signal.
	if err := os.Remove(users); err != nil {
		t.Fatal(err)
	}
	replaced := strings.Replace(content, "sam mailhost01", "sam mailhost02", 1)
	if err := os.WriteFile(users+".new", []byte(replaced), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(users+".new", users); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "sam routed to mailhost02", func() bool {
		h, err := gw.AuthRequest(ctx, "imap", "sam", e.Password("mailhost01", "sam"), nil)
		return err == nil && h.Get("Auth-Server") == harness.IPMailhost02
	})
	checkBaseline(t, gw, base)
}

// rewriteInPlace truncates path and writes content into it 16 KiB at a
// time, with a pause after each piece.
func rewriteInPlace(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < len(content); i += 16 << 10 {
		if _, err := f.WriteString(content[i:min(i+16<<10, len(content))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFor polls cond every 100 ms until it holds or 20 s have passed.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("20 s and still not %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBackendNameStopsResolving (fault matrix): a backend given by host
// name whose name stops resolving (imapgate's own /etc/hosts, edited in
// place) is answered "temporary", never "wrong password", while the
// other backend's users log in; once the name is back, so is the user.
func TestBackendNameStopsResolving(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: needs mailhost01 on " + harness.IPMailhost01)
	}
	const name = "mh1.imapgate.test"
	withName := fmt.Sprintf("127.0.0.1 localhost\n%s %s\n", harness.IPMailhost01, name)
	hosts := writeFile(t, "hosts", withName)
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipNamesGateway, HostsFile: hosts, Env: map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("named=%s;mailhost02=%s", name, harness.IPMailhost02),
		"IMAPGATE_FIRST_LETTER":    "f=named",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
	}})
	ctx := ctxFor(t, 2*time.Minute)
	frank := e.Password("mailhost01", "frank")
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "frank", frank); err != nil {
		t.Fatalf("frank while the name resolves: %v", err)
	}
	base := usageOf(t, gw)
	stop := make(chan struct{})
	others := keepWorkingAs(t, gw, stop, "bob", "mailhost02")

	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil { // in place: the bind mount sees it
		t.Fatal(err)
	}
	// POP3 checks are not cached by frank's IMAP login. Go rereads the
	// hosts file within 5 s.
	seen := map[string]int{}
	waitFor(t, ctx, "frank refused as temporary", func() bool {
		h, err := gw.AuthRequest(ctx, "pop3", "frank", frank, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Get("Auth-Status")]++
		return strings.HasPrefix(h.Get("Auth-Status"), "[SYS/TEMP] ")
	})
	for status := range seen {
		if status != "OK" && !strings.HasPrefix(status, "[SYS/TEMP] ") {
			t.Errorf("frank, name gone: Auth-Status %q, want OK or temporary", status)
		}
	}
	err := clientLogin(t, gw, dialerFrom(clientIP(13)), "imap", "frank", frank+"-not")
	wantCode(t, "frank, name gone", "imap", err, "UNAVAILABLE", temporaryText)

	if err := os.WriteFile(hosts, []byte(withName), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "frank let in again", func() bool {
		h, err := gw.AuthRequest(ctx, "pop3", "frank", frank, nil)
		return err == nil && h.Get("Auth-Status") == "OK"
	})
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "pop3", "frank", frank); err != nil {
		t.Errorf("frank once the name is back: %v", err)
	}
	close(stop)
	t.Logf("%d logins of bob meanwhile", others())
	checkBaseline(t, gw, base)
}

// The flood of TestConnectionFlood: more slow connections than imapgate
// has descriptors (20,000, as in the field report that showed the fault),
// from nginx's side of IMAPGATE_ALLOW_FROM, plus some from outside it.
const (
	floodFDLimit   = 20000
	floodAllowed   = 24000
	floodForbidden = 2000
	floodHold      = 10 * time.Second
)

// TestConnectionFlood (fault matrix): 24,000 connections that send a byte
// a second, against an imapgate limited to 20,000 descriptors, and 2,000
// more from a network outside IMAPGATE_ALLOW_FROM. nginx's requests keep
// being answered (cached logins and fresh checks alike), the backends
// stay up, /readyz says ready, and afterwards imapgate's goroutines,
// descriptors and memory come back.
//
// Not parallel: it runs alone, before the parallel scenarios, so that its
// load on the machine cannot slow theirs into timeouts.
func TestConnectionFlood(t *testing.T) {
	e := requireEnv(t)
	settings := seedSettings()
	// nginx, /metrics and the harness's requests come from 127.0.0.1.
	settings["IMAPGATE_ALLOW_FROM"] = "127.0.0.1,127.0.60.210/31,127.0.60.212/31"
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipFloodGateway, MaxFiles: floodFDLimit, Env: settings})
	ctx := ctxFor(t, 3*time.Minute)
	alice := e.Password("mailhost01", "alice")
	if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", "alice", alice); err != nil {
		t.Fatalf("alice before the flood: %v", err)
	}
	base := usageOf(t, gw)
	from := gw.Imapgate.Len()

	// In processes of their own: this one may not hold 26,000
	// descriptors.
	allowed, err := e.StartFlood(ctx, &harness.Flood{Target: gw.AuthAddr, Conns: floodAllowed, Interval: time.Second,
		Sources: []string{"127.0.60.210", "127.0.60.211", "127.0.60.212", "127.0.60.213"}})
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Stop()
	forbidden, err := e.StartFlood(ctx, &harness.Flood{Target: gw.AuthAddr, Conns: floodForbidden, Interval: time.Second,
		Sources: []string{"127.0.60.220", "127.0.60.221"}})
	if err != nil {
		t.Fatal(err)
	}
	defer forbidden.Stop()
	waitFor(t, ctx, "the flood's connections made", func() bool { return allowed.Stats().Opened >= floodAllowed })
	t.Logf("flood up: %v; imapgate has %v open", allowed.Stats(), scrape(t, gw)["imapgate_connections_open"])

	// Held for floodHold: nginx's logins go on, cached and fresh.
	var peak usage
	fresh := []struct{ user, host string }{{"frank", "mailhost01"}, {"bob", "mailhost02"}, {"dave", "mailhost02"}, {"gina", "mailhost01"}}
	logins := 0
	for end := time.Now().Add(floodHold); time.Now().Before(end); {
		proto := []string{"imap", "pop3"}[logins%2]
		if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), proto, "alice", alice); err != nil {
			t.Errorf("alice (cached) over %s during the flood: %v", proto, err)
		}
		if logins < len(fresh) {
			f := fresh[logins]
			if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), "imap", f.user, e.Password(f.host, f.user)); err != nil {
				t.Errorf("%s (a fresh check) during the flood: %v", f.user, err)
			}
		}
		logins++
		if code, body := getPath(t, gw, "/readyz"); code != 200 {
			t.Errorf("/readyz during the flood: %d %s", code, body)
		}
		u := usageOf(t, gw)
		peak.rss, peak.goroutines, peak.fds = max(peak.rss, u.rss), max(peak.goroutines, u.goroutines), max(peak.fds, u.fds)
		time.Sleep(200 * time.Millisecond)
	}
	m := scrape(t, gw)
	t.Logf("%d rounds of logins during the flood; imapgate at most %v; flood: %v; outside ALLOW_FROM: %v", logins, peak, allowed.Stop(), forbidden.Stop())
	for _, reason := range []string{"refused", "evicted"} {
		if m[`imapgate_connections_dropped_total{reason="`+reason+`"}`] == 0 {
			t.Errorf("no connection dropped as %s: %v", reason, m)
		}
	}
	if peak.fds >= floodFDLimit || m["imapgate_connections_open"] > m["imapgate_connections_max"] {
		t.Errorf("imapgate held %v descriptors (limit %d), %v connections (cap %v)", peak.fds, floodFDLimit, m["imapgate_connections_open"], m["imapgate_connections_max"])
	}
	for _, l := range gw.Imapgate.Lines()[from:] {
		r := harness.LoginRecord(harness.ParseLogLine(l))
		if r.Get("msg") == "backend down" || r.Get("msg") == "accept failed; retrying" {
			t.Errorf("during the flood imapgate logged: %s", l)
		}
	}
	checkBaseline(t, gw, base)
}
