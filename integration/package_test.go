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
// checks what it installed, runs imapgate -check-config on the settings
// file as installed (no backend: exit 2), with a minimal setup (ok) and
// broken (one line per problem), starts imapgate from it and asks
// /healthz, then removes and purges it and checks that the file system is
// as it was before.
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

	// As an operator would: check the settings, then start imapgate with
	// exactly the variables of the env file (the unit's EnvironmentFile;
	// systemd is not PID 1 in this container, TestDebianPackageSystemd
	// has it). As installed, the file names no backend.
	if got, want := sh(checkInstalled("/etc/imapgate/imapgate.env")),
		"IMAPGATE_BACKENDS: required: the mail servers, name=host;... (see the README)\nexit=2\n"; got != want {
		t.Errorf("imapgate -check-config on the installed settings:\n%s\nwant:\n%s", got, want)
	}
	sh(addSettings)
	if got := sh(checkInstalled("/etc/imapgate/imapgate.env")); got != "ok\nexit=0\n" {
		t.Errorf("imapgate -check-config with a backend and a rule:\n%s", got)
	}
	// A broken copy: one line per problem, in the settings' order, then
	// the variable that is no setting, then the live checks.
	sh(`cp /etc/imapgate/imapgate.env /tmp/broken.env
		printf 'IMAPGATE_PORT_IMAP=0\nIMAPGATE_LOG_LEVEL=loud\nIMAPGATE_SHARD_SECRET=x\nIMAPGATE_LISTEN=127.0.0.1\nIMAPGATE_BACKENDS=mailhost01=mail.invalid\n' >>/tmp/broken.env`)
	broken := strings.Split(sh(checkInstalled("/tmp/broken.env")), "\n")
	for i, want := range []string{
		"IMAPGATE_PORT_IMAP: port 0 is not a port",
		`IMAPGATE_LOG_LEVEL: "loud" is not debug, info, warn or error`,
		"IMAPGATE_SHARD_SECRET: not a setting: imapgate ignores it; did you mean IMAPGATE_SHARED_SECRET?",
		"IMAPGATE_LISTEN: address 127.0.0.1: missing port in address",
		`IMAPGATE_BACKENDS: backend "mailhost01": resolve "mail.invalid": `,
		"exit=2",
		"",
	} {
		if i >= len(broken) || !strings.HasPrefix(broken[i], want) || len(broken) != 7 {
			t.Errorf("imapgate -check-config on a broken file: line %d, want %q; got:\n%s", i+1, want, strings.Join(broken, "\n"))
			break
		}
	}
	// Its backend is down, so /readyz would say 503; /healthz answers.
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
// imapgate.service as shipped, after imapgate -check-config on the
// settings as systemd reads them: it starts in its sandbox (a dynamic user,
// no capability, no new privileges, a system call filter), answers
// /healthz, rereads the users file on `systemctl reload`, prints its
// settings (-print-config) as systemd reads them back, scores what
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
		echo alice >/etc/imapgate/users`)
	// Checked first, with the settings read by systemd's own
	// EnvironmentFile= parser, as the unit reads them.
	if got := sh(systemdRun("/etc/imapgate/imapgate.env", "-check-config") + ` && echo exit=0 || echo "exit=$?"`); got != "ok\nexit=0\n" {
		t.Errorf("imapgate -check-config under systemd-run:\n%s", got)
	}
	sh("systemctl enable --now imapgate.service")
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
	checkPrintConfigUnderSystemd(t, sh)
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

// systemdRun is the command line that runs the installed imapgate with
// flag as a transient service whose environment is envFile, read by
// systemd (EnvironmentFile=), and pipes its output back.
func systemdRun(envFile, flag string) string {
	return "systemd-run --quiet --wait --pipe --collect -p EnvironmentFile=" + envFile + " /usr/bin/imapgate " + flag
}

// checkPrintConfigUnderSystemd: imapgate -print-config, read back by
// systemd's EnvironmentFile= parser, prints the same settings. The ones
// added need its quoting: a ';', spaces, a '$' and single quotes, parens;
// the SQL URL's password is redacted and the rest of the URL shown.
func checkPrintConfigUnderSystemd(t *testing.T, sh func(string) string) {
	t.Helper()
	sh(`cp /etc/imapgate/imapgate.env /tmp/settings.env
		cat >>/tmp/settings.env <<'EOF'
IMAPGATE_BACKENDS=mailhost01=127.0.0.1;mailhost02=imap://127.0.0.2:1143
IMAPGATE_SQL_URL=postgres://imapgate:pw-4711@127.0.0.1/mail
IMAPGATE_SQL_QUERY=select mail_server from mailaccounts where username=$1 and status <> 'off'
IMAPGATE_LDAP_FILTER=(&(objectClass=inetOrgPerson)(uid=%s))
EOF`)
	printed := sh(systemdRun("/tmp/settings.env", "-print-config") + " >/tmp/printed.env && cat /tmp/printed.env")
	again := sh(systemdRun("/tmp/printed.env", "-print-config"))
	settings := func(file string) []string {
		var lines []string
		for _, l := range strings.Split(file, "\n") {
			if strings.HasPrefix(l, "IMAPGATE_") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	if a, b := strings.Join(settings(printed), "\n"), strings.Join(settings(again), "\n"); a != b || a == "" {
		t.Errorf("-print-config read back by systemd prints other settings:\n%s", lineDiff(a, b))
	}
	for _, want := range []string{
		"# environment\nIMAPGATE_BACKENDS='mailhost01=127.0.0.1;mailhost02=imap://127.0.0.2:1143'\n",
		"# environment, redacted\nIMAPGATE_SQL_URL=postgres://imapgate:xxxxx@127.0.0.1/mail\n",
		`IMAPGATE_SQL_QUERY="select mail_server from mailaccounts where username=\$1 and status <> 'off'"` + "\n",
		"IMAPGATE_LDAP_FILTER='(&(objectClass=inetOrgPerson)(uid=%s))'\n",
		"# default\nIMAPGATE_LIMIT_WINDOW=15m\n",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("-print-config under systemd has no %q:\n%s", want, printed)
		}
	}
	if strings.Contains(printed+again, "pw-4711") {
		t.Errorf("-print-config shows the SQL URL's password:\n%s", printed)
	}
}

// fsSnapshot lists everything in a container's file system but what dpkg
// itself keeps (its database and log), the scratch directories and the
// journal.
const fsSnapshot = `find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /run -o -path /var/lib/dpkg -o -path /var/log \) -prune -o -print | sort`

// checkInstalled runs the installed imapgate -check-config with exactly
// the IMAPGATE_ lines of an env file as its environment (the file holds
// no quotes, so each line is the variable as systemd would read it) and
// prints its exit status last, as exit=N.
func checkInstalled(envFile string) string {
	return `grep '^IMAPGATE_' ` + envFile + ` | xargs -d '\n' sh -c 'env -i "$@" /usr/bin/imapgate -check-config; echo "exit=$?"' imapgate`
}

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
