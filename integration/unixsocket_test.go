package integration

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// ipUnixSocketProxy is the nginx of TestAuthHTTPOverUnixSocket.
const ipUnixSocketProxy = "127.0.75.1"

// TestAuthHTTPOverUnixSocket: imapgate listening on a unix socket
// (IMAPGATE_LISTEN=unix:/path) serves nginx's `auth_http unix:/path:/uri`,
// as the README's snippet writes it: through real nginx, a right
// password logs in over IMAP and POP3 and a wrong one is refused as
// wrong, checked on Dovecot.
func TestAuthHTTPOverUnixSocket(t *testing.T) {
	t.Parallel()
	e := requireEnv(t)
	if e.Mode == harness.ModeExternal {
		t.Skip("external mode: the suite starts no imapgate of its own")
	}
	ctx := ctxFor(t, 2*time.Minute)
	sock := filepath.Join(e.Dir, "unix-socket-imapgate", "auth.sock")
	p, err := e.StartImapgate(ctx, "unix-socket-imapgate", "unix:"+sock, map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=" + harness.IPMailhost01,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	proxy, err := e.StartMailProxy(ctx, "unix-socket-nginx", ipUnixSocketProxy, "unix:"+sock+":")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Nginx.Stop(10 * time.Second) })

	pass := e.Password("mailhost01", "alice")
	d := dialerFrom(ipOtherUsers)
	if err := imapLogin(ctx, d, proxy.IMAPAddr, "alice", pass); err != nil {
		t.Errorf("IMAP, right password, auth_http over the unix socket: %v", err)
	}
	if err := pop3Login(ctx, d, proxy.POP3Addr, "alice", pass, false); err != nil {
		t.Errorf("POP3, right password, auth_http over the unix socket: %v", err)
	}
	err = imapLogin(ctx, d, proxy.IMAPAddr, "alice", "not-"+pass)
	wantCode(t, "a wrong password", "imap", err, "AUTHENTICATIONFAILED", "")
}
