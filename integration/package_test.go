package integration

import (
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
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if exec.CommandContext(ctx, "docker", "image", "inspect", "debian:bookworm-slim").Run() != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(root, "integration/dovecot/build-image.sh"), "--base-only")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build-image.sh --base-only: %v\n%s", err, out)
		}
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
	deb := strings.TrimSpace(string(out))
	if !strings.HasPrefix(filepath.Base(deb), "imapgate_") || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("mkdeb.sh printed %q, want the path of imapgate_<version>_<arch>.deb", deb)
	}
	hostVersion, err := exec.CommandContext(ctx, bin, "-version").Output()
	if err != nil {
		t.Fatal(err)
	}

	name := fmt.Sprintf("imapgate-it-deb-%d", os.Getpid())
	if out, err := exec.CommandContext(ctx, "docker", "run", "-d", "--rm", "--name", name, "--label", "imapgate-it=1",
		"--network", "none", "debian:bookworm-slim", "sleep", "infinity").CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out, err := exec.CommandContext(ctx, "docker", "cp", deb, name+":/tmp/imapgate.deb").CombinedOutput(); err != nil {
		t.Fatalf("docker cp: %v\n%s", err, out)
	}
	// sh runs script in the container and returns its output; a non-zero
	// exit fails the test.
	sh := func(script string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, "docker", "exec", name, "sh", "-ec", script).CombinedOutput()
		if err != nil {
			t.Fatalf("in the container: %s\n%v\n%s", script, err, out)
		}
		return string(out)
	}
	// Everything but what dpkg itself keeps (its database and log) and the
	// scratch directories.
	const snapshot = `find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /run -o -path /var/lib/dpkg -o -path /var/log \) -prune -o -print | sort`
	before := sh(snapshot)

	t.Log(sh("dpkg -i /tmp/imapgate.deb"))
	if got := sh("imapgate -version"); got != string(hostVersion) {
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
	// is not PID 1 in this container). Its backend is down, so /readyz
	// would say 503; /healthz answers.
	sh(`cat >>/etc/imapgate/imapgate.env <<'EOF'
IMAPGATE_BACKENDS=mailhost01=127.0.0.1
IMAPGATE_DEFAULT_BACKEND=mailhost01
IMAPGATE_LISTEN=127.0.0.1:9180
EOF`)
	if out, err := exec.CommandContext(ctx, "docker", "exec", "-d", name, "sh", "-c",
		`grep '^IMAPGATE_' /etc/imapgate/imapgate.env | xargs -d '\n' sh -c 'echo $$ >/tmp/imapgate.pid; exec env -i "$@" /usr/bin/imapgate 2>/tmp/imapgate.log' imapgate`).CombinedOutput(); err != nil {
		t.Fatalf("start imapgate: %v\n%s", err, out)
	}
	healthy := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if exec.CommandContext(ctx, "docker", "exec", "-e", "IMAPGATE_LISTEN=127.0.0.1:9180", name, "imapgate", "-healthcheck").Run() == nil {
			healthy = true
			break
		}
	}
	if !healthy {
		log, _ := exec.Command("docker", "exec", name, "cat", "/tmp/imapgate.log").CombinedOutput()
		t.Fatalf("the installed imapgate never answered /healthz; its log:\n%s", log)
	}
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
	if after := sh(snapshot); after != before {
		t.Errorf("the file system after dpkg -P differs from before dpkg -i:\n%s", lineDiff(before, after))
	}
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
