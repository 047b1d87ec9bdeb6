package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// clientIP is the n-th client address of the fault scenarios.
func clientIP(n int) string { return fmt.Sprintf("127.0.60.%d", 230+n) }

// keepWorking logs alice (mailhost01) and bob (mailhost02) in through gw
// over IMAP and POP3, again and again, until stop is closed, and reports
// every failure: the users a fault must not touch.
func keepWorking(t *testing.T, gw *harness.Gateway, stop <-chan struct{}) (wait func() int) {
	e := requireEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	logins := 0
	users := []struct{ user, host string }{{"alice", "mailhost01"}, {"bob", "mailhost02"}}
	for _, u := range users {
		for _, proto := range []string{"imap", "pop3"} {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), proto, u.user, e.Password(u.host, u.user)); err != nil {
						t.Errorf("%s over %s while the fault lasted: %v", u.user, proto, err)
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
	startHostile(t, at(143), endlessGreeting("* OK "))
	startHostile(t, at(110), endlessGreeting("+OK "))
	startHostile(t, at(1143), imapUntil("LOGIN", func(c net.Conn, _ string) {
		io.WriteString(c, "* OK ")
		endless(c)
	}))
	startHostile(t, at(1110), pop3Until("CAPA", func(c net.Conn) {
		// A multi-line answer whose lines are short enough, but never end.
		io.WriteString(c, "+OK\r\n")
		line := strings.Repeat("X", 1000) + "\r\n"
		for {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}))
	startHostile(t, at(2143), imapUntil("LOGIN", func(c net.Conn, _ string) { io.WriteString(c, "* OK half a rep") }))
	startHostile(t, at(2110), pop3Until("PASS", func(c net.Conn) { io.WriteString(c, "+O") }))
	startHostile(t, at(3143), greetThenStall("* OK [CAPABILITY IMAP4rev1] ready"))
	startHostile(t, at(3110), greetThenStall("+OK ready"))
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
	startHostile(t, at(143), greetThenStall("* OK [CAPABILITY IMAP4rev1] ready"))
	startHostile(t, at(993), stall)
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
			err := clientLogin(t, gw, dialerFrom(clientIP(20+i)), "imap", "tina", fmt.Sprintf("tinas-password-%d", i))
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
	err = clientLogin(t, gw, dialerFrom(clientIP(30)), "imap", "dave", dave)
	wantCode(t, "dave during the outage", "imap", err, "UNAVAILABLE", temporaryText)

	if err := be.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitIMAPGreeting(ctx, net.JoinHostPort(ipComeback, "143")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, proto := range []string{"imap", "pop3"} {
		if err := clientLogin(t, gw, dialerFrom(clientIP(30)), proto, "dave", dave); err != nil {
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
