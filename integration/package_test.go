package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// TestDebianPackage builds the Debian package the way `make deb` does,
// installs it into a clean Debian container (the debootstrap root that
// build-image.sh --base-only imports as debian:bookworm-slim; no network),
// checks what it installed, starts imapgate from it with a minimal
// settings file and asks /healthz, then removes and purges it and checks
// that the file system is as it was before.
func TestDebianPackage(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	ctx := ctxFor(t, 10*time.Minute)
	ensureImage(ctx, t, "debian:bookworm-slim", "--base-only")
	deb, hostVersion := buildDeb(ctx, t)
	sh := startPackageContainer(ctx, t, deb, "debian:bookworm-slim", "sleep", "infinity")
	before := sh(fsSnapshot)

	t.Log(sh("dpkg -i /root/imapgate.deb"))
	if got := sh("imapgate -version"); got != hostVersion {
		t.Errorf("imapgate -version in the container: %q, want the built binary's %q", got, hostVersion)
	}
	conffiles := sh(`dpkg-query -W -f='${Conffiles}\n' imapgate`)
	for _, f := range []string{"/etc/imapgate/imapgate.env", "/etc/fail2ban/filter.d/imapgate.conf"} {
		if !strings.Contains(conffiles, " "+f+" ") {
			t.Errorf("%s is not a conffile; dpkg says:\n%s", f, conffiles)
		}
	}
	sh(`test -x /usr/bin/imapgate
		grep -qx 'ExecStart=/usr/bin/imapgate' /lib/systemd/system/imapgate.service
		grep -qx 'EnvironmentFile=/etc/imapgate/imapgate.env' /lib/systemd/system/imapgate.service
		test "$(stat -c %a /etc/imapgate/imapgate.env)" = 600
		test -s /usr/share/imapgate/prometheus-rules.yml
		test -s /usr/share/imapgate/grafana-dashboard.json
		test -s /usr/share/doc/imapgate/examples/fail2ban-jail.conf
		test -s /usr/share/doc/imapgate/copyright
		test "$(stat -c %a /)" = 755`)

	// As an operator would: the settings in the env file, then imapgate
	// with exactly those variables (the unit's EnvironmentFile; systemd
	// is not PID 1 in this container, TestDebianPackageSystemd has it).
	// Its backend is down, so /readyz would say 503; /healthz answers.
	sh(addSettings)
	sh(`grep '^IMAPGATE_' /etc/imapgate/imapgate.env | xargs -d '\n' sh -c 'echo $$ >/tmp/imapgate.pid; exec env -i "$@" /usr/bin/imapgate 2>/tmp/imapgate.log' imapgate >/dev/null &`)
	waitInstalledHealthy(ctx, t, sh, "cat /tmp/imapgate.log")
	sh(`kill -TERM "$(cat /tmp/imapgate.pid)"
		for i in $(seq 50); do kill -0 "$(cat /tmp/imapgate.pid)" 2>/dev/null || exit 0; sleep 0.1; done
		echo "imapgate did not stop on SIGTERM" >&2; exit 1`)
	if log := sh("cat /tmp/imapgate.log"); !strings.Contains(log, "msg=stopped") {
		t.Errorf("imapgate's log has no msg=stopped:\n%s", log)
	}

	// Remove keeps the edited conffile (as dpkg does); purge takes it too.
	sh(`dpkg -r imapgate
		test ! -e /usr/bin/imapgate
		test ! -e /lib/systemd/system/imapgate.service
		test -e /etc/imapgate/imapgate.env`)
	sh(`dpkg -P imapgate
		if dpkg-query -W imapgate 2>/dev/null; then echo "dpkg still knows imapgate" >&2; exit 1; fi`)
	if after := sh(fsSnapshot); after != before {
		t.Errorf("the file system after dpkg -P differs from before dpkg -i:\n%s", lineDiff(before, after))
	}
}

// TestDebianPackageSystemd installs the package where systemd is PID 1 (a
// container of build-image.sh --systemd-only, no network) and runs
// imapgate.service as shipped: it starts in its sandbox (a dynamic user,
// no capability, no new privileges, a system call filter), answers
// /healthz, rereads the users file on `systemctl reload`, scores what
// `systemd-analyze security` says offline, stops with the package's
// removal, and purge leaves nothing, the enablement link included.
func TestDebianPackageSystemd(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	ctx := ctxFor(t, 10*time.Minute)
	const image = "imapgate-test/systemd:bookworm"
	ensureImage(ctx, t, image, "--systemd-only")
	deb, _ := buildDeb(ctx, t)
	// systemd as PID 1 needs to manage its own cgroups and mounts.
	sh := startPackageContainer(ctx, t, deb, "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
		"--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", image, "/sbin/init")
	booted := false
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && !booted; time.Sleep(250 * time.Millisecond) {
		out, _ := exec.CommandContext(ctx, "docker", "exec", packageContainer(t), "systemctl", "is-system-running").Output()
		state := strings.TrimSpace(string(out))
		booted = state == "running" || state == "degraded"
	}
	if !booted {
		t.Fatal("systemd in the container never finished booting")
	}
	before := sh(fsSnapshot)

	sh("dpkg -i /root/imapgate.deb")
	sh(addSettings + `
		printf 'IMAPGATE_USERS_FILE=/etc/imapgate/users\nIMAPGATE_USERS_FILE_BACKEND=mailhost01\n' >>/etc/imapgate/imapgate.env
		echo alice >/etc/imapgate/users
		systemctl enable --now imapgate.service`)
	waitInstalledHealthy(ctx, t, sh, "journalctl -u imapgate --no-pager -o cat")
	status := sh(`pid=$(systemctl show -p MainPID --value imapgate); grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/$pid/status`)
	for _, want := range []string{"CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want) {
			t.Errorf("imapgate under systemd: want %q in its /proc status:\n%s", want, status)
		}
	}
	if strings.Contains(status, "Uid:\t0\t") {
		t.Errorf("imapgate runs as root:\n%s", status)
	}
	sh(`echo bob >>/etc/imapgate/users
		systemctl reload imapgate.service
		for i in $(seq 50); do
			journalctl -u imapgate --no-pager -o cat | grep -q 'msg="users file loaded".*users=2' && exit 0
			sleep 0.1
		done
		echo "no users=2 after systemctl reload" >&2; journalctl -u imapgate --no-pager -o cat | tail >&2; exit 1`)
	if out := sh("systemd-analyze security imapgate.service | tail -1"); !strings.Contains(out, "exposure level for imapgate.service: 1.2 ") {
		t.Errorf("systemd-analyze security on the running system: %s (the README says 1.2)", out)
	}

	sh(`dpkg -r imapgate
		test "$(systemctl is-active imapgate.service)" != active`)
	sh(`dpkg -P imapgate
		rm /etc/imapgate/users && rmdir /etc/imapgate
		test ! -e /etc/systemd/system/multi-user.target.wants/imapgate.service`)
	if after := sh(fsSnapshot); after != before {
		t.Errorf("the file system after dpkg -P differs from before dpkg -i:\n%s", lineDiff(before, after))
	}
}

// fsSnapshot lists everything in a container's file system but what dpkg
// itself keeps (its database and log), the scratch directories and the
// journal.
const fsSnapshot = `find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /run -o -path /var/lib/dpkg -o -path /var/log \) -prune -o -print | sort`

// addSettings is what an operator adds to the installed settings file
// for a first start: one backend (down: nothing listens on it) and where
// to listen.
const addSettings = `cat >>/etc/imapgate/imapgate.env <<'EOF'
IMAPGATE_BACKENDS=mailhost01=127.0.0.1
IMAPGATE_DEFAULT_BACKEND=mailhost01
IMAPGATE_LISTEN=127.0.0.1:9180
EOF`

// ensureImage runs build-image.sh with flag when image is missing.
func ensureImage(ctx context.Context, t *testing.T, image, flag string) {
	t.Helper()
	if exec.CommandContext(ctx, "docker", "image", "inspect", image).Run() == nil {
		return
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "integration/dovecot/build-image.sh"), flag)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-image.sh %s: %v\n%s", flag, err, lastLines(string(out), 30))
	}
}

// buildDeb builds imapgate and its package as `make deb` does, into a
// directory of the test, and returns the package's path and what the
// binary's -version printed.
func buildDeb(ctx context.Context, t *testing.T) (deb, version string) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "imapgate")
	build := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/imapgate")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(root, "cmd/imapgate/contrib/mkdeb.sh"), bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mkdeb.sh: %v\n%s", err, out)
	}
	deb = strings.TrimSpace(string(out))
	if !strings.HasPrefix(filepath.Base(deb), "imapgate_") || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("mkdeb.sh printed %q, want the path of imapgate_<version>_<arch>.deb", deb)
	}
	v, err := exec.CommandContext(ctx, bin, "-version").Output()
	if err != nil {
		t.Fatal(err)
	}
	return deb, string(v)
}

// packageContainer is the name of the test's container.
func packageContainer(t *testing.T) string {
	return fmt.Sprintf("imapgate-it-deb-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
}

// startPackageContainer starts a container without network (runArgs end
// with the image and its command), copies deb into it as
// /root/imapgate.deb, and returns a function that runs a script in it and
// returns its output; a script that fails fails the test.
func startPackageContainer(ctx context.Context, t *testing.T, deb string, runArgs ...string) func(script string) string {
	t.Helper()
	name := packageContainer(t)
	exec.Command("docker", "rm", "-f", name).Run()
	args := append([]string{"run", "-d", "--name", name, "--label", "imapgate-it=1", "--network", "none"}, runArgs...)
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out, err := exec.CommandContext(ctx, "docker", "cp", deb, name+":/root/imapgate.deb").CombinedOutput(); err != nil {
		t.Fatalf("docker cp: %v\n%s", err, out)
	}
	return func(script string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "docker", "exec", name, "sh", "-ec", script).CombinedOutput()
		if err != nil {
			t.Fatalf("in the container: %s\n%v\n%s", script, err, out)
		}
		return string(out)
	}
}

// waitInstalledHealthy waits until the installed imapgate answers /healthz
// (imapgate -healthcheck), and shows what logCmd prints if it never does.
func waitInstalledHealthy(ctx context.Context, t *testing.T, sh func(string) string, logCmd string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if exec.CommandContext(ctx, "docker", "exec", "-e", "IMAPGATE_LISTEN=127.0.0.1:9180", packageContainer(t), "imapgate", "-healthcheck").Run() == nil {
			return
		}
	}
	t.Fatalf("the installed imapgate never answered /healthz; its log:\n%s", sh(logCmd+" || true"))
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
