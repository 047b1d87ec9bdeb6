package integration

import (
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the fault scenarios (127.0.60.x): gateways, the hostile
// backends the tests script themselves, and the clients' own addresses.
const (
	ipCodesGateway    = "127.0.60.1"
	ipHostileGateway  = "127.0.60.2"
	ipComebackGateway = "127.0.60.3"
	ipUsersGateway    = "127.0.60.5"
	ipNamesGateway    = "127.0.60.6"
	ipFloodGateway    = "127.0.60.7"
	ipTLSGateway      = "127.0.60.8"

	ipNowhere  = "127.0.60.99" // nothing listens here
	ipHostile  = "127.0.60.100"
	ipComeback = "127.0.60.101"
	ipStalling = "127.0.60.102"

	ipCodesWrong   = "127.0.60.200" // a client that types a wrong password
	ipCodesGuesser = "127.0.60.201" // a client past the guessing limit
	ipCodesOutage  = "127.0.60.202" // a client whose backend is down
	ipOtherUsers   = "127.0.60.203" // the users who keep working
)

// The Auth-Status texts with their response codes, as nginx passes them on.
const (
	imapInvalidStatus   = "[AUTHENTICATIONFAILED] " + invalidText
	imapTemporaryStatus = "[UNAVAILABLE] " + temporaryText
	imapThrottledStatus = "[UNAVAILABLE] " + throttledText
	pop3InvalidStatus   = "[AUTH] " + invalidText
)

// dialerFrom returns a client dialer whose connections come from ip.
func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// clientCode is what a real client read from nginx, in its protocol's
// terms: the IMAP response code and text, the POP3 -ERR text, the SMTP
// reply code and text.
func clientCode(proto string, err error) (code, text string) {
	if err == nil {
		return "", ""
	}
	var ie *imap.Error
	var pe *pop3Error
	var se *textproto.Error
	switch {
	case proto == "imap" && errors.As(err, &ie):
		return string(ie.Code), ie.Text
	case proto == "pop3" && errors.As(err, &pe):
		if rest, ok := strings.CutPrefix(pe.Text, "["); ok {
			code, text, _ := strings.Cut(rest, "] ")
			return code, text
		}
		return "", pe.Text
	case proto == "smtp" && errors.As(err, &se):
		return fmt.Sprint(se.Code), se.Msg
	}
	return "?", err.Error()
}

// clientLogin logs in with a real client of proto through gw.
func clientLogin(t *testing.T, gw *harness.Gateway, d *net.Dialer, proto, user, pass string) error {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	gw.AddSecret(pass)
	switch proto {
	case "imap":
		return imapLogin(ctx, d, gw.IMAPAddr, user, pass)
	case "pop3":
		return pop3Login(ctx, d, gw.POP3Addr, user, pass, false)
	}
	return smtpSend(ctx, d, gw.SMTPAddr, user, pass, user+"@example.test", "bob@example.test", "codes")
}

// wantCode checks the code and text a real client read.
func wantCode(t *testing.T, what, proto string, err error, code, text string) {
	t.Helper()
	gotCode, gotText := clientCode(proto, err)
	if gotCode != code || !strings.Contains(gotText, text) {
		t.Errorf("%s over %s: client read code %q text %q (%v), want %q and %q", what, proto, gotCode, gotText, err, code, text)
	}
}

// TestClientVisibleCodes: what a mail client reads through nginx carries
// a response code its software acts on. A wrong password is IMAP
// [AUTHENTICATIONFAILED], POP3 [AUTH], SMTP 535; a backend that is down is
// [UNAVAILABLE], [SYS/TEMP], 451; a login the guessing limits stopped
// unasked is [UNAVAILABLE], [SYS/TEMP], 454, so that no client drops a
// saved password it was never told is wrong.
func TestClientVisibleCodes(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	gw := startGatewayWith(t, harness.GatewayConfig{IP: ipCodesGateway, Env: map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;gone=%s", harness.IPMailhost01, ipNowhere),
		"IMAPGATE_FIRST_LETTER":    "z=gone",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
		// Three wrong passwords for one user from one network are enough
		// to reach the limit (the default is 10): fewer requests.
		"IMAPGATE_LIMIT_PAIR": "3",
	}})
	ctx := ctxFor(t, 2*time.Minute)
	for i := range 3 {
		h, err := gw.AuthRequest(ctx, "imap", "frank", fmt.Sprintf("frank-guess-%d", i), map[string]string{"Client-IP": ipCodesGuesser})
		if err != nil || h.Get("Auth-Status") != imapInvalidStatus {
			t.Fatalf("guess %d: %v %v", i, h, err)
		}
	}
	// nginx holds each failure for its Auth-Wait (2, 3 and 10 s) before
	// the client reads it: the cases run side by side, in goroutines
	// rather than parallel subtests, which would wait for the suite's
	// few parallel slots.
	cases := []struct {
		name, ip, user, pass string
		codes                map[string]string
		text                 string
	}{
		{"wrong password", ipCodesWrong, "gina", "not-ginas-password", map[string]string{"imap": "AUTHENTICATIONFAILED", "pop3": "AUTH", "smtp": "535"}, invalidText},
		{"backend down", ipCodesOutage, "zed", "zeds-password", map[string]string{"imap": "UNAVAILABLE", "pop3": "SYS/TEMP", "smtp": "451"}, temporaryText},
		{"throttled", ipCodesGuesser, "frank", "frank-guess-again", map[string]string{"imap": "UNAVAILABLE", "pop3": "SYS/TEMP", "smtp": "454"}, throttledText},
	}
	var wg sync.WaitGroup
	for _, proto := range []string{"imap", "pop3", "smtp"} {
		for _, c := range cases {
			wg.Go(func() {
				err := clientLogin(t, gw, dialerFrom(c.ip), proto, c.user, c.pass)
				wantCode(t, c.name, proto, err, c.codes[proto], c.text)
			})
		}
	}
	wg.Wait()
	// And the right password still works, over each protocol.
	for _, proto := range []string{"imap", "pop3", "smtp"} {
		if err := clientLogin(t, gw, dialerFrom(ipOtherUsers), proto, "alice", e.Password("mailhost01", "alice")); err != nil {
			t.Errorf("alice over %s: %v", proto, err)
		}
	}
}
