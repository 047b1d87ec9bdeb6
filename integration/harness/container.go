package harness

// imapgate as a container (IMAPGATE_IT_IMAPGATE=container): the image built
// from the top-level Dockerfile, run with --network host so that it reaches
// the Dovecots on 127.0.0.x and nginx on the host reaches it on
// 127.0.1.N:9180 (all traffic stays on loopback), configured only by
// IMAPGATE_* environment variables. Its output is read from the attached
// `docker run` client, so a Gateway's Imapgate process works the same in
// both modes (WaitLine, Output, Signal: the client forwards signals).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvImapgate selects how the gateways run imapgate: process (default, the
// binary built from ./cmd/imapgate) or container (ImapgateImage).
const EnvImapgate = "IMAPGATE_IT_IMAPGATE"

// imapgate modes, chosen by IMAPGATE_IT_IMAPGATE.
const (
	ImapgateProcess   = "process"
	ImapgateContainer = "container"
)

// ImapgateImage is the tag the harness builds from the top-level Dockerfile.
const ImapgateImage = "imapgate-test/imapgate:dev"

// imapgateMode returns the imapgate mode IMAPGATE_IT_IMAPGATE asks for.
func imapgateMode() (string, error) {
	switch m := os.Getenv(EnvImapgate); m {
	case "", ImapgateProcess:
		return ImapgateProcess, nil
	case ImapgateContainer:
		return ImapgateContainer, nil
	default:
		return "", fmt.Errorf("%s=%q: want process or container", EnvImapgate, m)
	}
}

// checkImapgateDeps returns a *MissingError when mode needs a Docker engine
// and none is reachable.
func checkImapgateDeps(ctx context.Context, mode string) error {
	if mode == ImapgateContainer && !DockerReachable(ctx) {
		return &MissingError{What: "a reachable Docker engine (docker info fails) for " + EnvImapgate + "=container"}
	}
	return nil
}

// imageBuild remembers the outcome of the run's one image build.
type imageBuild struct {
	mu    sync.Mutex
	done  bool
	err   error
	took  time.Duration
	image string
}

// ImapgateImage builds ImapgateImage from the module's top-level Dockerfile,
// once per run, and returns its tag. When the Dockerfile's Go image is
// missing, integration/container/go-image.sh makes it first (and, through
// build-image.sh --base-only, debian:bookworm-slim). The Docker build cache
// makes a rebuild of an unchanged tree take a second, a rebuild after a
// source change some fifteen.
func (e *Env) ImapgateImage(ctx context.Context) (string, error) {
	b := &e.imgBuild
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return b.image, b.err
	}
	start := time.Now()
	b.image, b.err = BuildImapgateImage(ctx, ImapgateImage, e.logf)
	b.took = time.Since(start)
	b.done = true
	if b.err == nil {
		e.logf("imapgate-it: image %s ready in %v", b.image, b.took.Round(time.Millisecond))
	}
	return b.image, b.err
}

// BuildImapgateImage runs go-image.sh (which does nothing when the Go image
// is there) and `docker build -t tag` on the module root, passing GOPROXY
// and GOSUMDB as build arguments when they are set in the environment.
func BuildImapgateImage(ctx context.Context, tag string, logf func(string, ...any)) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	goImage := exec.CommandContext(ctx, filepath.Join(root, "integration/container/go-image.sh"))
	goImage.Dir = root
	if out, err := goImage.CombinedOutput(); err != nil {
		return "", fmt.Errorf("integration/container/go-image.sh: %v\n%s", err, tail(string(out), 30))
	} else if !strings.Contains(string(out), " exists") {
		logf("imapgate-it: %s", tail(strings.TrimSpace(string(out)), 1))
	}
	args := []string{"build", "-t", tag}
	// The Dockerfile's optional build arguments, when this run has them.
	for _, v := range []string{"GOPROXY", "GOSUMDB"} {
		if val := os.Getenv(v); val != "" {
			args = append(args, "--build-arg", v+"="+val)
		}
	}
	build := exec.CommandContext(ctx, "docker", append(args, ".")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker build -t %s %s: %v\n%s", tag, root, err, tail(string(out), 30))
	}
	return tag, nil
}

// startImapgateContainer starts imapgate in a container of the run's image
// with settings as -e variables (and nothing else), and returns the attached
// `docker run` client as the gateway's Imapgate process. The directory of
// every *_FILE setting is mounted read-only at the same path (a directory,
// not the file, so that a file replaced by rename is seen), and made
// readable by the container's user (nobody) if it was not.
func (g *Gateway) startImapgateContainer(ctx context.Context, settings map[string]string) (*Process, error) {
	image, err := g.env.ImapgateImage(ctx)
	if err != nil {
		return nil, err
	}
	g.container = fmt.Sprintf("imapgate-it-%d-%s", os.Getpid(), strings.NewReplacer(":", "-", "/", "-").Replace(g.Name))
	args := []string{"run", "--name", g.container, "--label", "imapgate-it=1", "--network", "host"}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mounted := map[string]bool{}
	for _, k := range keys {
		v := settings[k]
		args = append(args, "-e", k+"="+v)
		if !strings.HasSuffix(k, "_FILE") || !filepath.IsAbs(v) {
			continue
		}
		dir := filepath.Dir(v)
		if mounted[dir] {
			continue
		}
		if err := worldReadableDir(dir); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		mounted[dir] = true
		args = append(args, "-v", dir+":"+dir+":ro")
	}
	if g.cfg.MaxFiles > 0 {
		args = append(args, "--ulimit", fmt.Sprintf("nofile=%d:%d", g.cfg.MaxFiles, g.cfg.MaxFiles))
	}
	if g.cfg.HostsFile != "" {
		resolv, err := g.deadResolvConf()
		if err != nil {
			return nil, err
		}
		args = append(args, "-v", g.cfg.HostsFile+":/etc/hosts:ro", "-v", resolv+":/etc/resolv.conf:ro")
	}
	args = append(args, image)
	cmd := exec.Command("docker", args...)
	cmd.Dir = g.dir
	return startProcess("imapgate-"+g.Name, filepath.Join(g.dir, "imapgate.log"), g.env.pidDir, cmd)
}

// worldReadableDir gives others read and search permission on dir (a test's
// t.TempDir is 0700), so that the container's nobody can open files in it.
func worldReadableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o005 == 0o005 {
		return nil
	}
	return os.Chmod(dir, fi.Mode().Perm()|0o005)
}

// Container returns the name of imapgate's container, or "" when imapgate
// runs as a process.
func (g *Gateway) Container() string { return g.container }

// stopImapgateContainer is the container's SIGTERM: `docker stop` (SIGTERM,
// SIGKILL after grace), then it checks that imapgate exited with status 0,
// and removes the container.
func (g *Gateway) stopImapgateContainer(grace time.Duration) error {
	name := g.container
	var errs []error
	if out, err := exec.Command("docker", "stop", "-t", strconv.Itoa(int(grace.Seconds())), name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("docker stop %s: %v: %s", name, err, out))
	}
	// The attached client ends when the container does.
	select {
	case <-g.Imapgate.Exited():
	case <-time.After(10 * time.Second):
		errs = append(errs, fmt.Errorf("docker run client of %s still running 10s after docker stop", name))
	}
	if err := g.Imapgate.Stop(time.Second); err != nil {
		errs = append(errs, err)
	}
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).Output()
	if err != nil {
		errs = append(errs, fmt.Errorf("docker inspect %s: %v", name, err))
	} else if s := strings.TrimSpace(string(out)); s != "0 false" {
		errs = append(errs, fmt.Errorf("container %s: exit status and OOM-killed %q after docker stop, want \"0 false\"", name, s))
	}
	if out, err := exec.Command("docker", "rm", "-f", name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("docker rm %s: %v: %s", name, err, out))
	}
	return errors.Join(errs...)
}
