package harness

// The Cyrus howto's deployment: two Cyrus IMAP 3.6 servers that speak TLS
// only (users in sasldb), each in a container of the image that
// integration/cyrus/build-image.sh builds (cyrus-imapd conflicts with the
// host's dovecot-imapd, so it is never installed on the host), and nginx
// stream {} frontends that take plain connections on local ports and speak
// TLS to the servers, as the howto's nginx.conf does.

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
)

// Addresses of the Cyrus deployment.
const (
	// IPServer3 and IPServer4 are the howto's server3 and server4 (IMAP
	// 143 with STARTTLS, IMAPS 993).
	IPServer3 = "127.0.20.11"
	IPServer4 = "127.0.20.12"
	// IPStreamFrontend holds the stream frontends: port 9143 to
	// server3:993 and 9144 to server4:993, the howto's two upstreams.
	IPStreamFrontend = "127.0.20.21"
)

// CyrusImage is the Cyrus test image built by integration/cyrus/build-image.sh.
const CyrusImage = "imapgate-test/cyrus:3.6"

// CyrusAccounts are the sasldb users of each Cyrus server. As in the
// howto, the users listed in its users.txt live on server4, the others on
// server3.
var CyrusAccounts = map[string][]dovecot.Account{
	"server3": {{User: "tom", Password: "tom-on-server3-8c1f"}, {User: "ann", Password: "ann-on-server3-52e0"}},
	"server4": {{User: "ben", Password: "ben-on-server4-0d7a"}, {User: "liz", Password: "liz-on-server4-e39b"}},
}

// cyrusIMAPDConf is /etc/imapd.conf: Debian's defaults for the keys it
// sets, except that plain-text logins need TLS (allowplaintext: no; the
// howto's servers speak TLS only), users are in sasldb, and the TLS
// certificate is the run's.
const cyrusIMAPDConf = `# Cyrus imapd.conf for imapgate's integration tests, written by the harness.
configdirectory: /var/lib/cyrus
proc_path: /run/cyrus/proc
mboxname_lockpath: /run/cyrus/lock
defaultpartition: default
partition-default: /var/spool/cyrus/mail
altnamespace: no
unixhierarchysep: no
hashimapspool: true
autocreate_quota: 0
allowplaintext: no
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: /etc/sasldb2
tls_server_cert: /etc/imapgate-it/server.crt
tls_server_key: /etc/imapgate-it/server.key
syslog_prefix: cyrus
`

// cyrusConf is /etc/cyrus.conf: IMAP and IMAPS only.
const cyrusConf = `# cyrus.conf for imapgate's integration tests, written by the harness.
START {
	recover		cmd="/usr/sbin/cyrus ctl_cyrusdb -r"
}
SERVICES {
	imap		cmd="imapd" listen="0.0.0.0:143" prefork=1 maxchild=50
	imaps		cmd="imapd -s" listen="0.0.0.0:993" prefork=1 maxchild=50
}
EVENTS {
	checkpoint	cmd="/usr/sbin/cyrus ctl_cyrusdb -c" period=30
}
DAEMON {
}
`

// cyrusStart is the container's command: the sasldb from the users file
// (made again at every start, so a restart changes nothing), the runtime
// directories, then the master in the foreground.
const cyrusStart = `#!/bin/sh
set -eu
rm -f /etc/sasldb2
while IFS=: read -r user pass; do
	printf '%s' "$pass" | saslpasswd2 -p -c "$user"
done < /etc/imapgate-it/users
chown cyrus:mail /etc/sasldb2
mkdir -p /run/cyrus/proc /run/cyrus/lock /run/cyrus/socket
chown -R cyrus:mail /run/cyrus
exec /usr/sbin/cyrmaster -D
`

// Cyrus is one Cyrus server in its container.
type Cyrus struct {
	// Name is the server's name (server3) and its container's host name.
	Name string
	// IP is the loopback address its ports 143 and 993 are published on.
	IP string
	// Accounts are its users.
	Accounts []dovecot.Account

	dir       string
	container string
	pool      *x509.CertPool
}

// IMAPAddr and IMAPSAddr are the server's IMAP (STARTTLS) and IMAPS
// addresses.
func (c *Cyrus) IMAPAddr() string  { return net.JoinHostPort(c.IP, "143") }
func (c *Cyrus) IMAPSAddr() string { return net.JoinHostPort(c.IP, "993") }

// StartCyrus starts the Cyrus server name (a key of CyrusAccounts) on ip,
// building its image first when it is missing.
func (e *Env) StartCyrus(ctx context.Context, name, ip string) (*Cyrus, error) {
	defer e.logStart("cyrus "+name, time.Now())
	if !DockerReachable(ctx) {
		return nil, &MissingError{What: "a reachable Docker engine, for the Cyrus containers"}
	}
	if err := e.ensureCyrusImage(ctx); err != nil {
		return nil, err
	}
	dir, err := e.newServerDir("cyrus-" + name)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := e.CA.Issue([]net.IP{net.ParseIP(ip)}, []string{name})
	if err != nil {
		return nil, err
	}
	var users strings.Builder
	for _, a := range CyrusAccounts[name] {
		fmt.Fprintf(&users, "%s:%s\n", a.User, a.Password)
	}
	// Cyrus reads the key as its own user: the test key is world-readable.
	for file, content := range map[string]string{"server.crt": string(certPEM), "server.key": string(keyPEM),
		"imapd.conf": cyrusIMAPDConf, "cyrus.conf": cyrusConf, "users": users.String(), "start.sh": cyrusStart} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o755); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CA.CertPEM)
	c := &Cyrus{Name: name, IP: ip, Accounts: CyrusAccounts[name], dir: dir, pool: pool,
		container: fmt.Sprintf("imapgate-it-%d-cyrus-%s", os.Getpid(), name)}
	args := []string{"run", "-d", "--name", c.container, "--label", "imapgate-it=1", "--hostname", name,
		"-v", dir + ":/etc/imapgate-it:ro",
		"-v", filepath.Join(dir, "imapd.conf") + ":/etc/imapd.conf:ro",
		"-v", filepath.Join(dir, "cyrus.conf") + ":/etc/cyrus.conf:ro",
		"-p", ip + ":143:143", "-p", ip + ":993:993",
		CyrusImage, "/etc/imapgate-it/start.sh"}
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("docker run cyrus %s: %v: %s", name, err, out)
	}
	if err := c.waitReady(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ensureCyrusImage builds the Cyrus image when it is missing.
func (e *Env) ensureCyrusImage(ctx context.Context) error {
	if exec.CommandContext(ctx, "docker", "image", "inspect", CyrusImage).Run() == nil {
		return nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	start := time.Now()
	e.logf("imapgate-it: image %s missing; running integration/cyrus/build-image.sh (debootstrap, about a minute)", CyrusImage)
	cmd := exec.CommandContext(ctx, filepath.Join(root, "integration/cyrus/build-image.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("integration/cyrus/build-image.sh: %v\n%s", err, tail(string(out), 30))
	}
	e.logf("imapgate-it: image %s built in %v", CyrusImage, time.Since(start).Round(time.Second))
	return nil
}

// waitReady waits until both ports greet (993 over TLS with the run's CA).
func (c *Cyrus) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	alive := func() error { return nil }
	for _, l := range []Listener{{Name: "imap", Address: c.IP, Port: 143}, {Name: "imaps", Address: c.IP, Port: 993, SSL: true}} {
		if err := waitGreeting(ctx, l, c.pool, alive); err != nil {
			out, _ := exec.Command("docker", "logs", "--tail", "20", c.container).CombinedOutput()
			return fmt.Errorf("cyrus %s not ready: %w\ndocker logs:\n%s", c.Name, err, out)
		}
	}
	return nil
}

// Stop stops the server's container, keeping it (and its mailboxes) for
// Start.
func (c *Cyrus) Stop() error {
	if out, err := exec.Command("docker", "stop", "-t", "5", c.container).CombinedOutput(); err != nil {
		return fmt.Errorf("docker stop %s: %v: %s", c.container, err, out)
	}
	return nil
}

// Start starts the stopped server again.
func (c *Cyrus) Start(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "docker", "start", c.container).CombinedOutput(); err != nil {
		return fmt.Errorf("docker start %s: %v: %s", c.container, err, out)
	}
	return c.waitReady(ctx)
}

// Close removes the server's container.
func (c *Cyrus) Close() error {
	if out, err := exec.Command("docker", "rm", "-f", c.container).CombinedOutput(); err != nil {
		return fmt.Errorf("docker rm %s: %v: %s", c.container, err, out)
	}
	return nil
}

// streamConf is the howto's stream {} block, on the harness's addresses:
// one frontend per Cyrus server, plain towards the client, TLS towards
// the server (here verified against the run's CA, which the howto leaves
// out).
const streamConf = `# nginx stream frontends of the Cyrus howto, written by the harness.
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log info;
load_module {{module}};
events {
    worker_connections 256;
}
stream {
{{servers}}}
`

// StartStreamFrontends starts nginx with a stream frontend per server:
// IPStreamFrontend:9143 for the first, :9144 for the second, and so on.
// It returns the nginx process and the frontends' addresses, by server.
func (e *Env) StartStreamFrontends(ctx context.Context, servers ...*Cyrus) (*Process, map[string]string, error) {
	defer e.logStart("nginx stream frontends", time.Now())
	module := "/usr/lib/nginx/modules/ngx_stream_module.so"
	if _, err := os.Stat(module); err != nil {
		return nil, nil, &MissingError{What: module + " (libnginx-mod-stream; run integration/install-deps.sh)"}
	}
	dir, err := e.newServerDir("stream-frontends")
	if err != nil {
		return nil, nil, err
	}
	addrs := map[string]string{}
	var blocks strings.Builder
	for i, c := range servers {
		addr := net.JoinHostPort(IPStreamFrontend, fmt.Sprint(9143+i))
		addrs[c.Name] = addr
		fmt.Fprintf(&blocks, `    upstream %[1]s_backend {
        server %[2]s;
    }
    server {
        listen %[3]s;
        proxy_pass %[1]s_backend;
        proxy_ssl on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate %[4]s;
        proxy_ssl_name %[1]s;
    }
`, c.Name, c.IMAPSAddr(), addr, e.CAFile)
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{module}}", module, "{{servers}}", blocks.String()).Replace(streamConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("nginx", "-c", confPath, "-p", dir, "-g", "daemon off;")
	p, err := startProcess("nginx-stream", filepath.Join(dir, "nginx.stderr"), e.pidDir, cmd)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, addr := range addrs {
		host, port, _ := net.SplitHostPort(addr)
		var portN int
		fmt.Sscan(port, &portN)
		if err := waitGreeting(ctx, Listener{Name: "stream", Address: host, Port: portN}, nil, nginxAlive(p, dir)); err != nil {
			p.Stop(5 * time.Second)
			return nil, nil, err
		}
	}
	return p, addrs, nil
}
