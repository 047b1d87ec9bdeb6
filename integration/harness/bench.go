package harness

// What `make bench` (integration/cmd/bench) needs beyond the scenarios: a
// Dovecot with generated accounts, imapgate and nginx started separately
// (imapgate's log written straight to a file, not kept in memory line by
// line, since a benchmark makes hundreds of thousands of log lines), and the
// baseline the issue compares imapgate with: nginx answering auth_http
// itself with a constant `return 204`.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
)

// Pid returns the process id of the process (the group leader).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// GenerateAccounts returns n accounts named prefix001, prefix002, ... with
// random passwords of letters and digits (nothing that needs escaping, so
// that a benchmark measures the common case).
func GenerateAccounts(prefix string, n int) []dovecot.Account {
	width := len(strconv.Itoa(n))
	if width < 3 {
		width = 3
	}
	accounts := make([]dovecot.Account, n)
	for i := range accounts {
		b := make([]byte, 8)
		rand.Read(b)
		accounts[i] = dovecot.Account{
			User:     fmt.Sprintf("%s%0*d", prefix, width, i+1),
			Password: "pw-" + hex.EncodeToString(b),
		}
	}
	return accounts
}

// StartAccountsBackend starts one more Dovecot instance, like
// StartExtraBackend, on ip's standard ports (143, 993, 110, 995), whose
// passwd-file holds accounts instead of one of the committed files. The
// committed passwd-files are left alone, so the scenarios never see these
// accounts. Close (or the caller) stops it.
func (e *Env) StartAccountsBackend(ctx context.Context, name, ip string, accounts []dovecot.Account) (*Backend, error) {
	if e.Mode == ModeExternal {
		return nil, errors.New("external mode: the harness cannot start backends")
	}
	b := e.newBackend(name, ip, dovecot.Hosts[0], standardListeners(ip))
	b.Accounts = append([]dovecot.Account(nil), accounts...)
	e.mu.Lock()
	e.extra = append(e.extra, b)
	e.mu.Unlock()
	if err := b.render(); err != nil {
		return nil, err
	}
	var passwd strings.Builder
	for _, a := range accounts {
		if strings.ContainsAny(a.User+a.Password, ":\r\n") {
			return nil, fmt.Errorf("account %q: user and password may not contain ':' or line breaks", a.User)
		}
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", a.User, a.Password)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "passwd"), []byte(passwd.String()), 0o644); err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// startProcessToFile is startProcess for chatty processes: the output goes
// straight to logPath and is not kept in memory (Lines and WaitLine see
// nothing; read the file instead).
func startProcessToFile(name, logPath, pidDir string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logFile.Close() // the child has its own descriptor
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	if pidDir != "" {
		p.pidfile = filepath.Join(pidDir, fmt.Sprintf("%s-%d.pid", name, cmd.Process.Pid))
		_ = os.WriteFile(p.pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartImapgate starts the imapgate binary alone, listening on listen, with
// settings as its only IMAPGATE_* environment (imapgate's own defaults for
// the rest: text log at info level), its log written to
// DIR/name/imapgate.log. It returns once imapgate accepts connections.
// Stop it with Process.Stop.
func (e *Env) StartImapgate(ctx context.Context, name, listen string, settings map[string]string) (*Process, error) {
	return e.StartImapgateLimited(ctx, name, listen, settings, 0)
}

// StartImapgateLimited is StartImapgate with imapgate's limit on open
// files (RLIMIT_NOFILE) set to maxFiles by prlimit(1); 0 leaves it as
// this process's.
func (e *Env) StartImapgateLimited(ctx context.Context, name, listen string, settings map[string]string, maxFiles int) (*Process, error) {
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TZ=UTC"}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+settings[k])
	}
	env = append(env, "IMAPGATE_LISTEN="+listen)
	cmd := exec.Command(e.Binary)
	if maxFiles > 0 {
		// prlimit execs imapgate: the process is imapgate itself.
		n := strconv.Itoa(maxFiles)
		cmd = exec.Command("prlimit", "--nofile="+n+":"+n, "--", e.Binary)
	}
	cmd.Env = env
	cmd.Dir = dir
	p, err := startProcessToFile("imapgate-"+name, filepath.Join(dir, "imapgate.log"), e.pidDir, cmd)
	if err != nil {
		return nil, err
	}
	if err := waitAccept(ctx, p, listen); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// nginx204Conf is an HTTP server answering every request the way an
// auth_http script that says yes to everybody would, with nginx's own
// `return 204`: the baseline of the cached-answer and end-to-end
// benchmarks. Access log on, as nginx has by default.
const nginx204Conf = `# nginx answering auth_http with a constant, written by the harness.
worker_processes {{workers}};
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
events {
    worker_connections 4096;
}

http {
    access_log {{dir}}/access.log;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;

    server {
        listen {{listen}};
        location / {
            add_header Auth-Status OK;
            add_header Auth-Server {{server}};
            add_header Auth-Port {{port}};
            return 204;
        }
    }
}
`

// StartNginx204 starts an nginx HTTP server on listen that answers every
// request with 204 and the headers Auth-Status: OK, Auth-Server: server,
// Auth-Port: port. workers is worker_processes ("auto", "1", ...).
func (e *Env) StartNginx204(ctx context.Context, name, listen, workers, server string, port int) (*Process, error) {
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{workers}}", workers, "{{listen}}", listen,
		"{{server}}", server, "{{port}}", strconv.Itoa(port)).Replace(nginx204Conf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("nginx", "-c", confPath, "-p", dir, "-g", "daemon off;")
	p, err := startProcess("nginx-"+name, filepath.Join(dir, "nginx.stderr"), e.pidDir, cmd)
	if err != nil {
		return nil, err
	}
	if err := waitAccept(ctx, p, listen); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// MailProxy is an nginx mail proxy started by StartMailProxy.
type MailProxy struct {
	// IMAPAddr, POP3Addr and SMTPAddr are its listeners.
	IMAPAddr, POP3Addr, SMTPAddr string
	// Nginx is the running nginx.
	Nginx *Process
}

// StartMailProxy starts an nginx mail proxy on ip (143, 110, 25) with the
// very configuration StartGateway gives the scenarios' nginx, asking
// auth_http at authAddr (imapgate, or the nginx of StartNginx204).
func (e *Env) StartMailProxy(ctx context.Context, name, ip, authAddr string) (*MailProxy, error) {
	return e.StartMailProxyWithSecret(ctx, name, ip, authAddr, "")
}

// StartMailProxyWithSecret is StartMailProxy with nginx sending secret in
// X-Imapgate-Secret (auth_http_header), as the README's snippet does.
func (e *Env) StartMailProxyWithSecret(ctx context.Context, name, ip, authAddr, secret string) (*MailProxy, error) {
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p, err := startMailNginx(ctx, e.pidDir, name, dir, ip, authAddr, secret, nil)
	if err != nil {
		return nil, err
	}
	return &MailProxy{
		IMAPAddr: net.JoinHostPort(ip, "143"),
		POP3Addr: net.JoinHostPort(ip, "110"),
		SMTPAddr: net.JoinHostPort(ip, "25"),
		Nginx:    p,
	}, nil
}
