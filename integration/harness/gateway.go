package harness

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// GatewayConfig says how to run one imapgate behind one nginx.
type GatewayConfig struct {
	// Name names the gateway's directory and processes; defaults to its IP.
	Name string
	// IP is the loopback address nginx (ports 143, 110, 25) and imapgate
	// (port 9180) listen on; the harness allocates one when empty.
	IP string
	// Env holds imapgate's IMAPGATE_* settings. The harness sets
	// IMAPGATE_LISTEN and, unless given, IMAPGATE_LOG_FORMAT=json.
	Env map[string]string
	// Secret, when set, is sent by nginx as X-Imapgate-Secret (and set as
	// IMAPGATE_SHARED_SECRET).
	Secret string
	// Imapgate overrides the run's IMAPGATE_IT_IMAPGATE for this gateway:
	// ImapgateProcess or ImapgateContainer ("" = the run's).
	Imapgate string
	// TLS has nginx offer STARTTLS on 143, 110 and 25 and implicit TLS on
	// 993, 995 and 465, with a certificate for IP signed by the run's CA
	// (Env.CAFile), as mail clients expect.
	TLS bool
	// MaxFiles, when set, is imapgate's limit on open files (RLIMIT_NOFILE,
	// soft and hard): prlimit(1) for a process, --ulimit for a container.
	MaxFiles int
	// HostsFile, when set, is the file imapgate sees as /etc/hosts (a
	// bind mount in a mount namespace of its own, or of its container),
	// so that a test can make a name stop resolving by editing the file
	// in place; imapgate then also sees a resolv.conf whose one name
	// server is nowhere, so that a name not in the file fails at once.
	HostsFile string
}

// Gateway is imapgate and the nginx mail proxy that asks it: the system under
// test, reached by clients on IMAPAddr, POP3Addr and SMTPAddr.
type Gateway struct {
	// Name is the gateway's name.
	Name string
	// IP is the loopback address of its listeners.
	IP string
	// IMAPAddr, POP3Addr and SMTPAddr are nginx's mail listeners
	// (SMTP with smtp_auth login plain).
	IMAPAddr, POP3Addr, SMTPAddr string
	// IMAPSAddr, POP3SAddr and SMTPSAddr are its implicit-TLS listeners
	// (GatewayConfig.TLS; empty without).
	IMAPSAddr, POP3SAddr, SMTPSAddr string
	// AuthAddr is imapgate's HTTP address (nginx's auth_http).
	AuthAddr string
	// Imapgate and Nginx are the running processes; Imapgate's output is
	// its slog log. In container mode Imapgate is the attached `docker run`
	// client: its output is the container's, and it forwards signals.
	Imapgate, Nginx *Process

	env     *Env
	cfg     GatewayConfig
	dir     string
	mu      sync.Mutex
	secrets []string
	closed  bool
	// container is imapgate's container in ImapgateContainer mode.
	container string
}

// StartGateway starts imapgate with cfg.Env and an nginx mail proxy whose
// auth_http points at it, and waits for both to be ready. Close stops them.
func (e *Env) StartGateway(ctx context.Context, cfg GatewayConfig) (*Gateway, error) {
	if cfg.IP == "" {
		cfg.IP = e.nextGatewayIP()
	}
	if cfg.Name == "" {
		cfg.Name = "gw-" + cfg.IP
	}
	g := &Gateway{
		Name:     cfg.Name,
		IP:       cfg.IP,
		IMAPAddr: net.JoinHostPort(cfg.IP, "143"),
		POP3Addr: net.JoinHostPort(cfg.IP, "110"),
		SMTPAddr: net.JoinHostPort(cfg.IP, "25"),
		AuthAddr: net.JoinHostPort(cfg.IP, "9180"),
		env:      e,
		cfg:      cfg,
		dir:      filepath.Join(e.Dir, cfg.Name),
	}
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return nil, err
	}
	if cfg.Secret != "" {
		g.AddSecret(cfg.Secret)
	}
	if cfg.TLS {
		g.IMAPSAddr = net.JoinHostPort(cfg.IP, "993")
		g.POP3SAddr = net.JoinHostPort(cfg.IP, "995")
		g.SMTPSAddr = net.JoinHostPort(cfg.IP, "465")
	}
	if err := g.startImapgate(ctx); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.startNginx(ctx); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) startImapgate(ctx context.Context) error {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + g.dir, "TZ=UTC"}
	settings := map[string]string{"IMAPGATE_LOG_FORMAT": "json"}
	for k, v := range g.cfg.Env {
		settings[k] = v
	}
	settings["IMAPGATE_LISTEN"] = g.AuthAddr
	if g.cfg.Secret != "" {
		settings["IMAPGATE_SHARED_SECRET"] = g.cfg.Secret
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+settings[k])
	}
	var p *Process
	var err error
	mode := g.env.ImapgateMode
	if g.cfg.Imapgate != "" {
		mode = g.cfg.Imapgate
	}
	if mode == ImapgateContainer {
		p, err = g.startImapgateContainer(ctx, settings)
	} else {
		var argv []string
		// Not :=, which would leave startProcess's error in a shadow.
		if argv, err = g.processArgv(); err != nil {
			return err
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		cmd.Dir = g.dir
		p, err = startProcess("imapgate-"+g.Name, filepath.Join(g.dir, "imapgate.log"), g.env.pidDir, cmd)
	}
	if err != nil {
		return err
	}
	g.Imapgate = p
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if lvl := settings["IMAPGATE_LOG_LEVEL"]; lvl == "warn" || lvl == "error" {
		// No info lines, so no msg=listening: accepting is the sign.
		return waitAccept(ctx, g.Imapgate, g.AuthAddr)
	}
	if _, _, err := p.WaitLine(ctx, 0, func(line string) bool {
		if rec := ParseLogLine(line); rec != nil {
			return rec["msg"] == "listening"
		}
		return strings.Contains(line, "msg=listening") // IMAPGATE_LOG_FORMAT=text
	}); err != nil {
		return fmt.Errorf("imapgate did not log msg=listening: %w", err)
	}
	return waitAccept(ctx, g.Imapgate, g.AuthAddr)
}

const nginxConf = `# nginx mail proxy for imapgate's integration tests, written by the harness.
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log info;
{{load}}
events {
    worker_connections 512;
}

mail {
    server_name imapgate-it.test;
    auth_http {{auth}}/mail/auth.php;
    auth_http_timeout 30s;
{{secret}}
{{tls}}
    proxy on;
    proxy_pass_error_message on;
    # The relay stand-in would accept XCLIENT too; off keeps the hand-over
    # the plainest SMTP.
    xclient off;

    imap_auth login plain;
    pop3_auth plain;
    smtp_auth login plain;

    server {
        listen {{ip}}:143;
        protocol imap;
    }
    server {
        listen {{ip}}:110;
        protocol pop3;
    }
    server {
        listen {{ip}}:25;
        protocol smtp;
    }
{{tlsservers}}
}
`

// nginxTLS and nginxTLSServers are nginxConf's {{tls}} and {{tlsservers}}
// with TLS on.
const (
	nginxTLS = `    ssl_certificate     {{dir}}/nginx-tls.crt;
    ssl_certificate_key {{dir}}/nginx-tls.key;
    # STARTTLS on the plain ports; the ssl listeners below are implicit TLS.
    starttls on;`
	nginxTLSServers = `    server {
        listen {{ip}}:993 ssl;
        protocol imap;
    }
    server {
        listen {{ip}}:995 ssl;
        protocol pop3;
    }
    server {
        listen {{ip}}:465 ssl;
        protocol smtp;
    }`
)

// mailModule returns the load_module line nginx needs for mail {} (none when
// the mail module is built in), or an error when nginx has no mail module.
func mailModule() (string, error) {
	out, err := exec.Command("nginx", "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nginx -V: %v: %s", err, out)
	}
	v := string(out)
	switch {
	case strings.Contains(v, "--with-mail=dynamic"):
		for _, p := range []string{"/usr/lib/nginx/modules/ngx_mail_module.so", "/usr/lib64/nginx/modules/ngx_mail_module.so"} {
			if _, err := os.Stat(p); err == nil {
				return "load_module " + p + ";", nil
			}
		}
		return "", &MissingError{What: "nginx mail module (Debian: apt-get install libnginx-mod-mail)"}
	case strings.Contains(v, "--with-mail"):
		return "", nil
	}
	return "", &MissingError{What: "an nginx built with the mail module"}
}

func (g *Gateway) startNginx(ctx context.Context) error {
	var ca *CA
	if g.cfg.TLS {
		ca = g.env.CA
	}
	p, err := startMailNginx(ctx, g.env.pidDir, g.Name, g.dir, g.IP, g.AuthAddr, g.cfg.Secret, ca)
	if err != nil {
		return err
	}
	g.Nginx = p
	return nil
}

// startMailNginx starts nginx with nginxConf in dir: mail listeners on ip
// (143, 110, 25) asking auth_http at authAddr, sending secret as
// X-Imapgate-Secret when it is set, and with TLS (see GatewayConfig.TLS)
// when tlsCA is not nil. It returns once every listener greets.
func startMailNginx(ctx context.Context, pidDir, name, dir, ip, authAddr, secret string, tlsCA *CA) (*Process, error) {
	load, err := mailModule()
	if err != nil {
		return nil, err
	}
	secretLine := ""
	if secret != "" {
		secretLine = fmt.Sprintf("    auth_http_header X-Imapgate-Secret %q;", secret)
	}
	tlsLines, tlsServers := "", ""
	if tlsCA != nil {
		cert, key, err := tlsCA.Issue([]net.IP{net.ParseIP(ip)}, []string{"localhost"})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "nginx-tls.crt"), cert, 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "nginx-tls.key"), key, 0o600); err != nil {
			return nil, err
		}
		tlsLines, tlsServers = nginxTLS, nginxTLSServers
	}
	conf := strings.NewReplacer("{{tls}}", tlsLines, "{{tlsservers}}", tlsServers).Replace(nginxConf)
	conf = strings.NewReplacer("{{dir}}", dir, "{{load}}", load, "{{auth}}", authAddr,
		"{{secret}}", secretLine, "{{ip}}", ip).Replace(conf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("nginx", "-c", confPath, "-p", dir, "-g", "daemon off;")
	p, err := startProcess("nginx-"+name, filepath.Join(dir, "nginx.stderr"), pidDir, cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	alive := nginxAlive(p, dir)
	listeners := []Listener{{Address: ip, Port: 143}, {Address: ip, Port: 110}, {Address: ip, Port: 25}}
	var pool *x509.CertPool
	if tlsCA != nil {
		pool = x509.NewCertPool()
		pool.AppendCertsFromPEM(tlsCA.CertPEM)
		listeners = append(listeners, Listener{Address: ip, Port: 993, SSL: true},
			Listener{Address: ip, Port: 995, SSL: true}, Listener{Address: ip, Port: 465, SSL: true})
	}
	for _, l := range listeners {
		l.Name = "nginx"
		if err := waitGreeting(ctx, l, pool, alive); err != nil {
			p.Stop(5 * time.Second)
			return nil, fmt.Errorf("nginx %s: %w", name, err)
		}
	}
	return p, nil
}

// AddSecret records a string (a password a test typed) that must never
// appear in imapgate's log; Close checks.
func (g *Gateway) AddSecret(s string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Once each: a scenario sending thousands of requests must not make
	// Close search the log thousands of times for one password.
	if !slices.Contains(g.secrets, s) {
		g.secrets = append(g.secrets, s)
	}
	return s
}

// Close stops nginx and imapgate (SIGTERM) and then checks imapgate's log
// for every known password, in the forms a log line could carry it. It
// returns an error naming the user whose password leaked, never the password.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	var errs []error
	if g.Nginx != nil {
		if err := g.Nginx.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if g.Imapgate != nil {
		stop := g.Imapgate.Stop
		if g.container != "" {
			stop = g.stopImapgateContainer
		}
		if err := stop(15 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("imapgate did not exit cleanly on SIGTERM: %w", err))
		}
		errs = append(errs, g.checkNoSecrets())
	}
	return errors.Join(errs...)
}

func (g *Gateway) checkNoSecrets() error {
	log := g.Imapgate.Output()
	type secret struct{ label, value string }
	var secrets []secret
	for _, b := range g.env.Backends {
		for _, a := range b.Accounts {
			secrets = append(secrets, secret{"password of " + a.User + "@" + b.Name, a.Password})
		}
	}
	g.mu.Lock()
	for i, s := range g.secrets {
		secrets = append(secrets, secret{fmt.Sprintf("test secret #%d", i+1), s})
	}
	g.mu.Unlock()
	var errs []error
	for _, s := range secrets {
		for _, form := range secretForms(s.value) {
			if strings.Contains(log, form) {
				errs = append(errs, fmt.Errorf("imapgate's log (%s) contains the %s", g.Imapgate.LogPath, s.label))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// secretForms are the ways a password could show up in a log line: raw,
// JSON-escaped, and %-escaped as nginx sends it.
func secretForms(s string) []string {
	forms := []string{s}
	if b, err := json.Marshal(s); err == nil {
		forms = append(forms, string(b[1:len(b)-1]))
	}
	forms = append(forms, NginxEscape(s))
	if len(strings.TrimSpace(s)) < 6 {
		return nil // too short to search for without false alarms
	}
	return forms
}

// NginxEscape escapes s the way nginx escapes Auth-User and Auth-Pass:
// bytes 0x00-0x1F, space and '%' become %XX; everything else is sent raw.
func NginxEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c == '%' || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// AuthRequest sends imapgate one auth_http request exactly as nginx would
// (HTTP/1.0 GET, new connection, escaped user and password) and returns the
// response headers. extra adds or overrides request headers.
func (g *Gateway) AuthRequest(ctx context.Context, protocol, user, pass string, extra map[string]string) (textproto.MIMEHeader, error) {
	g.AddSecret(pass)
	headers := [][2]string{
		{"Host", g.IP},
		{"Auth-Method", "plain"},
		{"Auth-User", NginxEscape(user)},
		{"Auth-Pass", NginxEscape(pass)},
		{"Auth-Protocol", protocol},
		{"Auth-Login-Attempt", "1"},
		{"Client-IP", "127.0.9.9"},
	}
	if protocol == "smtp" {
		headers = append(headers, [2]string{"Client-Host", "[UNAVAILABLE]"})
	}
	if g.cfg.Secret != "" {
		headers = append(headers, [2]string{"X-Imapgate-Secret", g.cfg.Secret})
	}
	for k, v := range extra {
		replaced := false
		for i := range headers {
			if strings.EqualFold(headers[i][0], k) {
				headers[i][1], replaced = v, true
			}
		}
		if !replaced {
			headers = append(headers, [2]string{k, v})
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", g.AuthAddr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var req strings.Builder
	req.WriteString("GET /mail/auth.php HTTP/1.0\r\n")
	for _, h := range headers {
		req.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return nil, err
	}
	tp := textproto.NewReader(bufio.NewReader(conn))
	status, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("read status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.") {
		return nil, fmt.Errorf("bad status line %q", status)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("read headers: %w", err)
	}
	return h, nil
}

// ParseLogLine decodes one JSON log line of imapgate, or returns nil.
func ParseLogLine(line string) map[string]any {
	if !strings.HasPrefix(line, "{") {
		return nil
	}
	var rec map[string]any
	if json.Unmarshal([]byte(line), &rec) != nil {
		return nil
	}
	return rec
}

// LoginRecord is imapgate's msg=login log line.
type LoginRecord map[string]any

// Get returns attribute key as a string.
func (r LoginRecord) Get(key string) string {
	v, ok := r[key]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// WaitLogin waits until imapgate logs, at or after line index from, a
// msg=login line for user and protocol ("" matches any protocol).
func (g *Gateway) WaitLogin(ctx context.Context, from int, user, protocol string) (LoginRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	line, _, err := g.Imapgate.WaitLine(ctx, from, func(line string) bool {
		rec := ParseLogLine(line)
		if rec == nil || rec["msg"] != "login" {
			return false
		}
		r := LoginRecord(rec)
		return r.Get("user") == user && (protocol == "" || r.Get("protocol") == protocol)
	})
	if err != nil {
		return nil, err
	}
	return LoginRecord(ParseLogLine(line)), nil
}

// nginxAlive returns a check that fails, with nginx's output and the end
// of its error log in dir, once nginx p has exited.
func nginxAlive(p *Process, dir string) func() error {
	return func() error {
		select {
		case <-p.Exited():
			errLog, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
			return fmt.Errorf("nginx exited: %s\n%s", p.Output(), tail(string(errLog), 10))
		default:
			return nil
		}
	}
}
