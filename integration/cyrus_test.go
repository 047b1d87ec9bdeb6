package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// rawIMAP is a line-at-a-time IMAP client, so that the tests see exactly
// what Cyrus says (a bare NO, LOGINDISABLED) rather than a library's
// reading of it.
type rawIMAP struct {
	conn     net.Conn
	r        *bufio.Reader
	greeting string
	tag      int
}

func dialRawIMAP(ctx context.Context, addr string, tlsConfig *tls.Config) (*rawIMAP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if tlsConfig != nil {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	c := &rawIMAP{conn: conn, r: bufio.NewReader(conn)}
	if c.greeting, err = c.r.ReadString('\n'); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

// cmd sends one command and returns the untagged lines and the tagged
// reply.
func (c *rawIMAP) cmd(format string, args ...any) (untagged []string, reply string, err error) {
	c.tag++
	tag := fmt.Sprintf("t%d", c.tag)
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, fmt.Sprintf(format, args...)); err != nil {
		return nil, "", err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return untagged, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return untagged, rest, nil
		}
		untagged = append(untagged, line)
	}
}

func (c *rawIMAP) Close() { c.conn.Close() }

// cyrusHowto starts the howto's two Cyrus servers and their stream
// frontends, for the test's duration.
func cyrusHowto(t *testing.T) (servers map[string]*harness.Cyrus, frontends map[string]string) {
	t.Helper()
	e := requireEnv(t)
	ctx := ctxFor(t, 5*time.Minute)
	servers = map[string]*harness.Cyrus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for name, ip := range map[string]string{"server3": harness.IPServer3, "server4": harness.IPServer4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.StartCyrus(ctx, name, ip)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			servers[name] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, c := range servers {
			c.Close()
		}
	})
	for err := range errs {
		t.Fatalf("start Cyrus: %v", err)
	}
	nginx, frontends, err := e.StartStreamFrontends(ctx, servers["server3"], servers["server4"])
	if err != nil {
		t.Fatalf("start stream frontends: %v", err)
	}
	t.Cleanup(func() { nginx.Stop(10 * time.Second) })
	return servers, frontends
}

// TestCyrusHowto checks the real Cyrus servers of the howto, before any
// imapgate is in front: TLS only, a wrong password gets a bare NO, a
// right one logs in and finds its INBOX created, directly over TLS and
// through the stream frontend.
func TestCyrusHowto(t *testing.T) {
	servers, frontends := cyrusHowto(t)
	e := requireEnv(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CA.CertPEM)
	ctx := ctxFor(t, 2*time.Minute)

	t.Run("plain port offers LOGINDISABLED and refuses LOGIN", func(t *testing.T) {
		c, err := dialRawIMAP(ctx, servers["server3"].IMAPAddr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !strings.Contains(c.greeting, "LOGINDISABLED") || !strings.Contains(c.greeting, "STARTTLS") || !strings.Contains(c.greeting, "Cyrus IMAP 3.6") {
			t.Errorf("greeting %q: want Cyrus IMAP 3.6 with STARTTLS and LOGINDISABLED", c.greeting)
		}
		a := servers["server3"].Accounts[0]
		if _, reply, err := c.cmd("LOGIN %s %s", a.User, a.Password); err != nil || !strings.HasPrefix(reply, "NO") {
			t.Errorf("LOGIN without TLS: %q, %v; want NO", reply, err)
		}
	})

	type target struct{ name, addr string }
	var targets []target
	for name, c := range servers {
		targets = append(targets, target{name + " over TLS", c.IMAPSAddr()}, target{name + " through its stream frontend", frontends[name]})
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel() // each wrong password costs Cyrus's 3 s pause
			server := strings.Fields(tg.name)[0]
			var tc *tls.Config
			if strings.HasSuffix(tg.addr, ":993") {
				tc = &tls.Config{RootCAs: pool, ServerName: server}
			}
			a := servers[server].Accounts[0]
			c, err := dialRawIMAP(ctx, tg.addr, tc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if strings.Contains(c.greeting, "LOGINDISABLED") {
				t.Errorf("greeting over TLS %q offers LOGINDISABLED", c.greeting)
			}
			start := time.Now()
			_, reply, err := c.cmd("LOGIN %s %s", a.User, "wrong-"+a.Password)
			if err != nil || !strings.HasPrefix(reply, "NO ") || strings.Contains(reply, "[") {
				t.Fatalf("wrong password: %q, %v; want a bare NO", reply, err)
			}
			t.Logf("wrong password: %q after %v", reply, time.Since(start).Round(100*time.Millisecond))
			if _, reply, err := c.cmd("LOGIN %s %s", a.User, a.Password); err != nil || !strings.HasPrefix(reply, "OK") {
				t.Fatalf("right password: %q, %v; want OK", reply, err)
			}
			if _, reply, err := c.cmd("SELECT INBOX"); err != nil || !strings.HasPrefix(reply, "OK") {
				t.Fatalf("SELECT INBOX after the first login: %q, %v; want OK (autocreate_quota: 0)", reply, err)
			}
		})
	}
}
