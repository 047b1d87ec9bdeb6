package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// requireDocker skips the test when no Docker engine is reachable (fails
// instead under CI=true).
func requireDocker(t *testing.T) {
	t.Helper()
	if harness.DockerReachable(t.Context()) {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no reachable Docker engine (docker info fails); CI=true needs one")
	}
	t.Skip("no reachable Docker engine (docker info fails); under CI=true this fails")
}

// TestContainerImage proves the image of the top-level Dockerfile: built on
// this machine with no registry, started with nothing but IMAPGATE_*
// environment variables, healthy by its own HEALTHCHECK, running as nobody,
// small, and doing its job behind nginx. (IMAPGATE_IT_IMAPGATE=container
// runs every other scenario in it too.)
func TestContainerImage(t *testing.T) {
	e := requireEnv(t)
	requireDocker(t)
	t.Parallel()
	ctx := ctxFor(t, 10*time.Minute)
	start := time.Now()
	image, err := e.ImapgateImage(ctx)
	if err != nil {
		t.Fatalf("build the image: %v", err)
	}
	t.Logf("image %s ready in %v (one build per run, shared with IMAPGATE_IT_IMAPGATE=container)", image, time.Since(start).Round(time.Millisecond))

	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", "{{.Size}} {{.Config.User}}", image).Output()
	if err != nil {
		t.Fatalf("docker image inspect: %v", err)
	}
	var size int64
	var user string
	if _, err := fmt.Sscan(string(out), &size, &user); err != nil {
		t.Fatalf("docker image inspect: %q: %v", out, err)
	}
	t.Logf("image size %.1f MB, USER %s", float64(size)/1e6, user)
	if size > 30e6 {
		t.Errorf("image is %d bytes; a static binary on scratch should stay under 30 MB", size)
	}

	gw := startGatewayWith(t, harness.GatewayConfig{Env: seedSettings(), Imapgate: harness.ImapgateContainer})
	started := time.Now()
	name := gw.Container()
	if name == "" {
		t.Fatal("the gateway's imapgate is not a container")
	}

	// Its HEALTHCHECK, as the image defines it: the first probe comes one
	// interval (10s) after the start.
	healthCtx := ctxFor(t, 60*time.Second)
	var status string
	for {
		out, err := exec.CommandContext(healthCtx, "docker", "inspect", "-f", "{{.State.Health.Status}}", name).Output()
		status = strings.TrimSpace(string(out))
		if err == nil && status == "healthy" {
			break
		}
		if status == "unhealthy" {
			log, _ := exec.Command("docker", "inspect", "-f", "{{json .State.Health.Log}}", name).Output()
			t.Fatalf("container %s is unhealthy: %s", name, log)
		}
		select {
		case <-healthCtx.Done():
			t.Fatalf("container %s not healthy within 60s (status %q, err %v)", name, status, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Logf("healthy %v after imapgate listened", time.Since(started).Round(100*time.Millisecond))

	// Non-root: the process's real, effective, saved and filesystem uids.
	uids := containerUIDs(t, ctx, name)
	if uids != "65534 65534 65534 65534" {
		t.Errorf("container %s runs with uids %q, want 65534 (nobody) for all", name, uids)
	} else {
		t.Logf("runs as uid 65534 (real, effective, saved, fs)")
	}

	d := e.ClientDialer()
	alice := e.Password("mailhost01", "alice")
	if err := imapLogin(ctx, d, gw.IMAPAddr, "alice", alice); err != nil {
		t.Errorf("alice, right password, through nginx and the container: %v", err)
	}
	wrong := gw.AddSecret("not-alices-password-1")
	err = imapLogin(ctx, d, gw.IMAPAddr, "alice", wrong)
	if err == nil || !strings.Contains(imapErrorText(err), invalidText) {
		t.Errorf("alice, wrong password: got %v, want %q", err, invalidText)
	}
	if _, err := gw.WaitLogin(ctx, 0, "alice", "imap"); err != nil {
		t.Errorf("no login record in the container's log: %v", err)
	}
}

// containerUIDs returns the Uid line of /proc/PID/status of the container's
// main process ("real effective saved fs").
func containerUIDs(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{.State.Pid}}", name).Output()
	if err != nil {
		t.Fatalf("docker inspect %s: %v", name, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil && pid > 0 {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				return strings.Join(strings.Fields(rest), " ")
			}
		}
	}
	// The engine is in another PID namespace: ask it.
	out, err = exec.CommandContext(ctx, "docker", "top", name, "-o", "ruid,euid,suid,fsuid").Output()
	if err != nil {
		t.Fatalf("docker top %s: %v", name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(strings.Fields(lines[len(lines)-1]), " ")
}

// startGatewayWith is startGateway with a whole GatewayConfig.
func startGatewayWith(t *testing.T, cfg harness.GatewayConfig) *harness.Gateway {
	t.Helper()
	e := requireEnv(t)
	gw, err := e.StartGateway(ctxFor(t, 5*time.Minute), cfg)
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
	return gw
}
