package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

// slowVerifier accepts every login once release is closed, and tells
// entered when a check starts.
type slowVerifier struct {
	entered chan struct{}
	release chan struct{}
}

func (v slowVerifier) Verify(ctx context.Context, req imapcheck.Request) (imapcheck.Outcome, error) {
	v.entered <- struct{}{}
	<-v.release
	return imapcheck.OK, nil
}

func testListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func get(t *testing.T, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if header != nil {
		req.Header = header
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func loginHeader() http.Header {
	h := http.Header{}
	h.Set("Auth-Method", "plain")
	h.Set("Auth-User", "alice")
	h.Set("Auth-Pass", "secret")
	h.Set("Auth-Protocol", "imap")
	h.Set("Auth-Login-Attempt", "1")
	h.Set("Client-IP", "192.0.2.1")
	return h
}

// TestServeEndpointsAndGracefulStop runs the real server: the auth_http
// answer on the seed's path, the operations endpoints, and a stop that
// lets the login in flight finish.
func TestServeEndpointsAndGracefulStop(t *testing.T) {
	svc, err := build(map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.0.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
	})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing to probe: the login goes to the slow verifier.
	svc.health.Backends = nil
	v := slowVerifier{entered: make(chan struct{}), release: make(chan struct{})}
	svc.handler.Verifier = v
	ln := testListener(t)
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.serve(ctx, listeners{auth: ln}) }()

	if resp, body := get(t, base+"/healthz", nil); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(t, base+"/readyz", nil); resp.StatusCode != 200 {
		t.Errorf("/readyz with nothing to probe: %d %q", resp.StatusCode, body)
	}

	answer := make(chan *http.Response, 1)
	go func() {
		resp, _ := get(t, base+"/mail/auth.php", loginHeader())
		answer <- resp
	}()
	<-v.entered
	if resp, body := get(t, base+"/metrics", nil); resp.StatusCode != 200 || !strings.Contains(body, "imapgate_checks_in_flight 1") {
		t.Errorf("/metrics during a check: %d, in-flight gauge missing", resp.StatusCode)
	}
	cancel() // SIGTERM
	close(v.release)
	resp := <-answer
	if got := resp.Header.Get("Auth-Status"); got != "OK" {
		t.Errorf("login in flight at stop answered %q, want OK", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the stop")
	}
}

func TestServeSeparateOpsListener(t *testing.T) {
	svc, err := build(map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.0.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.health.Backends = nil
	ln, opsLn := testListener(t), testListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.serve(ctx, listeners{auth: ln, ops: opsLn}) }()
	defer func() { cancel(); <-done }()

	if resp, _ := get(t, "http://"+opsLn.Addr().String()+"/metrics", nil); resp.StatusCode != 200 {
		t.Errorf("/metrics on the ops listener: %d", resp.StatusCode)
	}
	// On the auth listener /metrics is just another auth_http path.
	if resp, _ := get(t, "http://"+ln.Addr().String()+"/metrics", nil); resp.Header.Get("Auth-Status") == "" {
		t.Errorf("auth listener served /metrics though it listens apart")
	}
}

func TestReadyzTurnsUnready(t *testing.T) {
	down := testListener(t)
	addr := down.Addr().String()
	down.Close() // nothing listens there now
	host, port, _ := net.SplitHostPort(addr)
	svc, err := build(map[string]string{
		"IMAPGATE_BACKENDS":        "mailhost01=imap://" + host + ":" + port,
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.health.ProbeAll(context.Background())
	rec := httptest.NewRecorder()
	svc.opsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "mailhost01 imap") {
		t.Errorf("/readyz with the backend down: %d %q", rec.Code, rec.Body.String())
	}
}

func TestLogBuffer(t *testing.T) {
	var out strings.Builder
	b := newLogBuffer(&out)
	b.Write([]byte("one line\n"))
	if out.Len() != 0 {
		t.Errorf("written before a flush: %q", out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.flushEvery(ctx); close(done) }()
	cancel()
	<-done
	if out.String() != "one line\n" {
		t.Errorf("after stopping: %q", out.String())
	}
}

// TestServeUnixSocket: IMAPGATE_LISTEN=unix:/path serves auth_http (as
// nginx's auth_http unix:/path:/uri asks) and the health check, and
// replaces a socket left by an earlier run.
func TestServeUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "imapgate.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // leaves the file, as a crashed process would
	env := map[string]string{
		"IMAPGATE_LISTEN":          "unix:" + path,
		"IMAPGATE_BACKENDS":        "mailhost01=127.0.0.1",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost01",
	}
	svc, err := build(env)
	if err != nil {
		t.Fatal(err)
	}
	svc.health.Backends = nil
	svc.handler.Verifier = slowVerifier{entered: make(chan struct{}, 1), release: closedChan()}
	lns, err := listen(context.Background(), svc.cfg)
	if err != nil {
		t.Fatalf("listen on a stale socket file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.serve(ctx, lns) }()
	defer func() { cancel(); <-done }()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	req, _ := http.NewRequest("GET", "http://localhost/mail/auth.php", nil)
	req.Header = loginHeader()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Auth-Status"); got != "OK" {
		t.Errorf("auth_http over the unix socket: Auth-Status %q", got)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	if code := runHealthcheck(); code != 0 {
		t.Errorf("-healthcheck over the unix socket exited %d", code)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
