package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Where TestWarnsOfOneClientAddress's gateway listens, and the loopback
// addresses its clients connect from: one each, then one for all.
const (
	oneSourceGatewayIP = "127.0.70.10"
	oneSourceSharedIP  = "127.0.70.20"
	oneSourceOwnIPs    = "127.0.70.%d" // 21…25
)

// TestWarnsOfOneClientAddress logs in through nginx as an operator's
// users would: first five users from five addresses (nginx passes each
// client's own), then the same users all from one address, which is what
// imapgate sees behind Docker's port mapping (the bridge's gateway) or a
// TCP proxy. imapgate warns exactly once, naming that address, and only
// for the second part.
func TestWarnsOfOneClientAddress(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	gw := startGatewayWith(t, harness.GatewayConfig{IP: oneSourceGatewayIP, Env: seedSettings()})
	users := []struct{ name, backend string }{
		{"alice", "mailhost01"}, {"bob", "mailhost02"}, {"carol", "mailhost01"}, {"dave", "mailhost02"}, {"erin", "mailhost02"},
	}
	dialer := func(ip string) *net.Dialer {
		return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	}
	login := func(d *net.Dialer, i int) {
		t.Helper()
		u := users[i%len(users)]
		if err := imapLogin(ctxFor(t, time.Minute), d, gw.IMAPAddr, u.name, e.Password(u.backend, u.name)); err != nil {
			t.Fatalf("login %d, %s from %s: %v", i, u.name, d.LocalAddr, err)
		}
	}
	// 100 logins (the watch's window), each user from an address of its own.
	for i := range 100 {
		login(dialer(fmt.Sprintf(oneSourceOwnIPs, 21+i%len(users))), i)
	}
	// 200: a whole window from the one address, wherever the windows fall.
	shared := dialer(oneSourceSharedIP)
	for i := range 200 {
		login(shared, i)
	}
	// A last login whose log line, once there, comes after every other.
	if err := imapLogin(ctxFor(t, time.Minute), shared, gw.IMAPAddr, "frank", e.Password("mailhost01", "frank")); err != nil {
		t.Fatalf("frank: %v", err)
	}
	if _, err := gw.WaitLogin(ctxFor(t, 30*time.Second), 0, "frank", "imap"); err != nil {
		t.Fatalf("no log line of frank's login: %v", err)
	}
	var warnings []harness.LoginRecord
	for _, line := range gw.Imapgate.Lines() {
		if rec := harness.ParseLogLine(line); rec != nil && rec["level"] == "WARN" && strings.HasPrefix(fmt.Sprint(rec["msg"]), "most logins come from one private address") {
			warnings = append(warnings, harness.LoginRecord(rec))
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("%d warnings about one address, want 1: %v", len(warnings), warnings)
	}
	w := warnings[0]
	if n, _ := strconv.Atoi(w.Get("logins")); w.Get("client") != oneSourceSharedIP || w.Get("of") != "100" || n <= 80 {
		t.Errorf("warning %v: want client=%s, more than 80 logins of 100", w, oneSourceSharedIP)
	}
	if !strings.Contains(w.Get("fix"), "IMAPGATE_TRUSTED_NETWORKS") {
		t.Errorf("warning %v does not say what to do", w)
	}
}
