package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
)

// Dovecot modes, chosen by IMAPGATE_IT_DOVECOT.
const (
	ModeAuto      = "auto"      // container when a Docker engine is reachable, else process
	ModeContainer = "container" // Dovecot in containers of the test image
	ModeProcess   = "process"   // Dovecot processes from the host's packages
	ModeExternal  = "external"  // already running backends named by IMAPGATE_IT_BACKEND_*
)

// Listener is one IMAP or POP3 listener of a backend, as seen from the host.
type Listener struct {
	Service string // "imap" or "pop3"
	Name    string // Dovecot's inet_listener name
	Address string // host IP it is reached on
	Port    int
	SSL     bool // implicit TLS (993, 995)
}

// Addr returns host:port.
func (l Listener) Addr() string { return net.JoinHostPort(l.Address, strconv.Itoa(l.Port)) }

// standardListeners are IMAP 143, IMAPS 993, POP3 110 and POP3S 995 on ip.
func standardListeners(ip string) []Listener {
	return []Listener{
		{"imap", "imap", ip, 143, false},
		{"imap", "imaps", ip, 993, true},
		{"pop3", "pop3", ip, 110, false},
		{"pop3", "pop3s", ip, 995, true},
	}
}

// Backend is one test mail host: a Dovecot instance (a process or a
// container) or an external server, with the accounts of its passwd-file.
type Backend struct {
	// Name is the instance name (mailhost01, ...).
	Name string
	// IP is where the standard ports (143, 110, 993, 995) listen.
	IP string
	// Listeners are all the addresses it answers on, standard ones first.
	Listeners []Listener
	// Accounts are the users Dovecot accepts, with their passwords.
	Accounts []dovecot.Account
	// LogPath is Dovecot's log file; empty for an external backend.
	LogPath string
	// AuthPenalty keeps Dovecot's per-IP auth penalty on (it is off
	// unless a test shows why imapgate's own limits matter).
	AuthPenalty bool

	mode      string
	passwd    string
	dir       string
	image     string
	container string
	ca        *CA
	pool      *x509.CertPool
	pidDir    string
	proc      *Process
}

// Password returns user's password on this backend, or "" and false.
func (b *Backend) Password(user string) (string, bool) {
	for _, a := range b.Accounts {
		if a.User == user {
			return a.Password, true
		}
	}
	return "", false
}

// IMAPAddr returns the standard IMAP address (port 143).
func (b *Backend) IMAPAddr() string { return net.JoinHostPort(b.IP, "143") }

// render writes the instance's run directory: dovecot.conf from the one
// template, the passwd-file, the certificate and an empty mail store.
func (b *Backend) render() error {
	for _, d := range []string{b.dir, filepath.Join(b.dir, "run"), filepath.Join(b.dir, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Mail is delivered as nobody (uid 65534, in the image as on the host).
	if err := os.Chmod(filepath.Join(b.dir, "mail"), 0o1777); err != nil {
		return err
	}
	passwd, err := dovecot.Passwd(b.passwd)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "passwd"), passwd, 0o644); err != nil {
		return err
	}
	var ips []net.IP
	for _, l := range b.Listeners {
		ips = append(ips, net.ParseIP(l.Address))
	}
	certPEM, keyPEM, err := b.ca.Issue(ips, []string{"localhost"})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "server.crt"), certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "server.key"), keyPEM, 0o600); err != nil {
		return err
	}
	tmpl, err := template.New("dovecot.conf").Parse(dovecot.ConfigTemplate)
	if err != nil {
		return err
	}
	data := struct {
		Name, Dir, BaseDir string
		Listeners          []Listener
		AuthPenalty        bool
		ContainerMode      bool
	}{Name: b.Name, Dir: b.dir, BaseDir: filepath.Join(b.dir, "run"), AuthPenalty: b.AuthPenalty,
		ContainerMode: b.mode == ModeContainer}
	for _, l := range b.Listeners {
		if b.mode == ModeContainer {
			// Inside the container Dovecot listens everywhere; Docker
			// publishes each port on its host address only.
			l.Address = "*"
			data.BaseDir = "/run/dovecot"
		}
		data.Listeners = append(data.Listeners, l)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.dir, "dovecot.conf"), buf.Bytes(), 0o644)
}

// Start starts the instance (again, after Stop) and waits until every
// listener greets.
func (b *Backend) Start(ctx context.Context) error {
	switch b.mode {
	case ModeExternal:
		return fmt.Errorf("backend %s is external: the harness cannot start it", b.Name)
	case ModeContainer:
		if b.container == "" {
			b.container = fmt.Sprintf("imapgate-it-%d-%s", os.Getpid(), b.Name)
			args := []string{"run", "-d", "--name", b.container, "--label", "imapgate-it=1",
				"-v", b.dir + ":" + b.dir,
				// Runtime sockets and fifos on a fresh tmpfs at every start:
				// left over in the container's own layer, they break a
				// restart (mkfifo: Input/output error on fuse-overlayfs).
				"--tmpfs", "/run/dovecot"}
			for _, l := range b.Listeners {
				args = append(args, "-p", fmt.Sprintf("%s:%d:%d", l.Address, l.Port, l.Port))
			}
			args = append(args, b.image, "/usr/sbin/dovecot", "-F", "-c", filepath.Join(b.dir, "dovecot.conf"))
			if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
				b.container = ""
				return fmt.Errorf("docker run %s: %v: %s", b.Name, err, out)
			}
		} else if out, err := exec.CommandContext(ctx, "docker", "start", b.container).CombinedOutput(); err != nil {
			return fmt.Errorf("docker start %s: %v: %s", b.container, err, out)
		}
	default:
		cmd := exec.Command("dovecot", "-F", "-c", filepath.Join(b.dir, "dovecot.conf"))
		p, err := startProcess("dovecot-"+b.Name, filepath.Join(b.dir, "dovecot.stderr"), b.pidDir, cmd)
		if err != nil {
			return err
		}
		b.proc = p
	}
	if err := b.waitReady(ctx); err != nil {
		return fmt.Errorf("dovecot %s (%s mode) not ready: %w%s", b.Name, b.mode, err, b.diagnostics())
	}
	return nil
}

func (b *Backend) diagnostics() string {
	var s strings.Builder
	if b.proc != nil {
		fmt.Fprintf(&s, "\nstderr:\n%s", tail(b.proc.Output(), 20))
	}
	if b.container != "" {
		out, _ := exec.Command("docker", "logs", "--tail", "20", b.container).CombinedOutput()
		fmt.Fprintf(&s, "\ndocker logs:\n%s", out)
	}
	if log, err := os.ReadFile(b.LogPath); err == nil {
		fmt.Fprintf(&s, "\ndovecot.log:\n%s", tail(string(log), 20))
	}
	return s.String()
}

// waitReady polls every listener until it greets (a port that accepts is not
// enough: Docker's proxy accepts before Dovecot runs).
func (b *Backend) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, l := range b.Listeners {
		if err := waitGreeting(ctx, l, b.pool, func() error {
			if b.proc != nil {
				select {
				case <-b.proc.Exited():
					return fmt.Errorf("dovecot exited")
				default:
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitGreeting retries until l sends its protocol greeting ("* OK" or
// "+OK"), alive says the server is still worth waiting for, or ctx ends.
func waitGreeting(ctx context.Context, l Listener, pool *x509.CertPool, alive func() error) error {
	var last error
	for {
		if err := alive(); err != nil {
			return err
		}
		last = greet(ctx, l, pool)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %v", l.Name, l.Addr(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func greet(ctx context.Context, l Listener, pool *x509.CertPool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", l.Addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if l.SSL {
		tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: l.Address})
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") && !strings.HasPrefix(line, "+OK") && !strings.HasPrefix(line, "220") {
		return fmt.Errorf("unexpected greeting %q", line)
	}
	return nil
}

// Stop stops the instance, keeping its run directory and container so that
// Start brings it back. Afterwards its ports refuse connections.
func (b *Backend) Stop() error {
	switch {
	case b.mode == ModeExternal:
		return fmt.Errorf("backend %s is external: the harness cannot stop it", b.Name)
	case b.container != "":
		out, err := exec.Command("docker", "stop", "-t", "5", b.container).CombinedOutput()
		if err != nil {
			return fmt.Errorf("docker stop %s: %v: %s", b.container, err, out)
		}
	case b.proc != nil:
		err := b.proc.Stop(10 * time.Second)
		b.proc = nil
		return err
	}
	return nil
}

// Close stops the instance for good and removes its container.
func (b *Backend) Close() error {
	switch {
	case b.container != "":
		out, err := exec.Command("docker", "rm", "-f", b.container).CombinedOutput()
		b.container = ""
		if err != nil {
			return fmt.Errorf("docker rm %s: %v: %s", b.Name, err, out)
		}
	case b.proc != nil:
		err := b.proc.Stop(10 * time.Second)
		b.proc = nil
		return err
	}
	return nil
}

// LogOffset returns the current size of Dovecot's log: pass it to LogSince
// or WaitLog to look only at what a test caused.
func (b *Backend) LogOffset() int64 {
	fi, err := os.Stat(b.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogSince returns the lines Dovecot logged after offset.
func (b *Backend) LogSince(offset int64) []string {
	f, err := os.Open(b.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// WaitLog waits until Dovecot logs, after offset, a line that satisfies match
// (Dovecot writes its log asynchronously, after answering the client).
func (b *Backend) WaitLog(ctx context.Context, offset int64, match func(string) bool) (string, error) {
	if b.LogPath == "" {
		return "", fmt.Errorf("backend %s has no log the harness can read", b.Name)
	}
	for {
		for _, line := range b.LogSince(offset) {
			if match(line) {
				return line, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("dovecot %s logged no awaited line: %w; log tail:\n%s", b.Name, ctx.Err(),
				strings.Join(lastN(b.LogSince(offset), 20), "\n"))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
