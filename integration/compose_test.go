package integration

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

var updateGenerated = flag.Bool("update", false, "rewrite generated files (the compose file's dovecot.conf) instead of comparing")

// TestComposeDovecotConfig keeps the compose file's dovecot.conf what the
// integration suite's template renders: one source of truth, the template.
func TestComposeDovecotConfig(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := harness.ComposeDovecotConfig()
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	path := filepath.Join(root, harness.ComposeDovecotConfigPath)
	if *updateGenerated {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not integration/dovecot/dovecot.conf.tmpl's rendering; regenerate it: go test ./integration/ -run TestComposeDovecotConfig -update", harness.ComposeDovecotConfigPath)
	}
}

// Where docker-compose.yml publishes nginx and imapgate's operations port,
// and the loopback address TestCompose's client connects from.
const (
	composeIP       = "127.0.0.5"
	composeProject  = "imapgate-it-compose"
	composeClientIP = "127.0.30.9"
)

// composeCommand returns the compose command of this machine: `docker
// compose` (v2) or `docker-compose` (v1.29+), or nil.
func composeCommand(ctx context.Context) []string {
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		if exec.CommandContext(ctx, "docker-compose", "version").Run() == nil {
			return []string{"docker-compose"}
		}
	}
	return nil
}

// TestCompose brings up the shipped docker-compose.yml (nginx, imapgate,
// two Dovecots; every image built on this machine), logs in through
// nginx's ports with a right and a wrong password from a client address of
// its own, checks that imapgate saw that address (not a Docker gateway's),
// and takes it down again with its volumes.
func TestCompose(t *testing.T) {
	e := requireEnv(t) // also holds the run lock: one compose project at a time
	requireDocker(t)
	t.Parallel()
	ctx := ctxFor(t, 15*time.Minute)
	compose := composeCommand(ctx)
	if compose == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("neither `docker compose` nor docker-compose works; CI=true needs one (integration/install-deps.sh installs docker-compose)")
		}
		t.Skip("neither `docker compose` nor docker-compose works (integration/install-deps.sh installs docker-compose); under CI=true this fails")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	run := func(ctx context.Context, args ...string) (string, error) {
		args = append(append(append([]string(nil), compose[1:]...), "-p", composeProject, "-f", filepath.Join(root, "docker-compose.yml")), args...)
		cmd := exec.CommandContext(ctx, compose[0], args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// No registry: the base and Go images are made locally when missing (the
	// imapgate image build also leaves its layers in the build cache, which
	// the compose build of the same Dockerfile then reuses).
	if _, err := e.ImapgateImage(ctx); err != nil {
		t.Fatalf("build the imapgate image: %v", err)
	}
	if exec.CommandContext(ctx, "docker", "image", "inspect", "debian:bookworm-slim").Run() != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(root, "integration/dovecot/build-image.sh"), "--base-only")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build-image.sh --base-only: %v\n%s", err, out)
		}
	}

	// A crashed earlier run may have left the project up.
	if out, err := run(ctx, "down", "-v", "--remove-orphans"); err != nil {
		t.Fatalf("%s down: %v\n%s", strings.Join(compose, " "), err, out)
	}
	start := time.Now()
	out, err := run(ctx, "up", "-d", "--build")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := run(context.Background(), "logs", "--no-color", "--tail", "40")
			t.Logf("compose logs:\n%s", logs)
		}
		if out, err := run(context.Background(), "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("%s down -v: %v\n%s", strings.Join(compose, " "), err, out)
		}
	})
	if err != nil {
		t.Fatalf("%s up -d --build: %v\n%s", strings.Join(compose, " "), err, lastLines(out, 40))
	}
	t.Logf("%s up -d --build: %v", strings.Join(compose, " "), time.Since(start).Round(100*time.Millisecond))

	// Ready: imapgate has probed both Dovecots' IMAP up (its own metrics, on
	// the published operations port), and nginx greets.
	readyCtx := ctxFor(t, 90*time.Second)
	metrics := "http://" + net.JoinHostPort(composeIP, "9181") + "/metrics"
	wantUp := []string{
		`imapgate_backend_up{backend="mailhost01",protocol="imap"} 1`,
		`imapgate_backend_up{backend="mailhost02",protocol="imap"} 1`,
	}
	var last string
	for {
		last = httpGetBody(readyCtx, metrics)
		if containsEvery(last, wantUp) {
			break
		}
		select {
		case <-readyCtx.Done():
			t.Fatalf("imapgate in compose never saw both Dovecots' IMAP up; %s:\n%s", metrics, linesContaining(last, "imapgate_backend_up"))
		case <-time.After(250 * time.Millisecond):
		}
	}
	imapAddr := net.JoinHostPort(composeIP, "143")
	for {
		err := imapGreeting(readyCtx, imapAddr)
		if err == nil {
			break
		}
		select {
		case <-readyCtx.Done():
			t.Fatalf("nginx in compose: no IMAP greeting on %s: %v", imapAddr, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Logf("ready %v after up", time.Since(start).Round(100*time.Millisecond))

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(composeClientIP)}}
	alice := e.Password("mailhost01", "alice")
	if err := imapLogin(ctx, &d, imapAddr, "alice", alice); err != nil {
		t.Errorf("IMAP alice (mailhost01), right password: %v", err)
	}
	bob := e.Password("mailhost02", "bob")
	if err := imapLogin(ctx, &d, imapAddr, "bob", bob); err != nil {
		t.Errorf("IMAP bob (mailhost02), right password: %v", err)
	}
	err = imapLogin(ctx, &d, imapAddr, "alice", "not-alices-password-2")
	if err == nil || !strings.Contains(imapErrorText(err), invalidText) {
		t.Errorf("IMAP alice, wrong password: got %v, want %q", err, invalidText)
	}
	// imapgate logged both outcomes.
	logs, _ := run(ctx, "logs", "--no-color", "imapgate")
	for _, want := range []string{"outcome=ok", "outcome=rejected"} {
		if !strings.Contains(logs, want) {
			t.Errorf("imapgate's compose log has no %s line:\n%s", want, lastLines(logs, 20))
		}
	}
	// Every login line names the client's own address: nginx, on the
	// host's network, saw it and passed it on.
	logins := linesContaining(logs, "msg=login")
	if n := strings.Count(logins, "msg=login "); n < 3 || strings.Count(logins, "msg=login client="+composeClientIP+" ") != n {
		t.Errorf("imapgate's compose log: want 3 or more login lines, all with client=%s:\n%s", composeClientIP, logins)
	}
	if strings.Contains(logs, alice) {
		t.Error("imapgate's compose log contains alice's password")
	}
}

// httpGetBody returns the body of url, or "" on any error.
func httpGetBody(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func containsEvery(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func linesContaining(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// imapGreeting dials addr and reads an IMAP greeting ("* OK").
func imapGreeting(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("greeting %q", line)
	}
	return nil
}
