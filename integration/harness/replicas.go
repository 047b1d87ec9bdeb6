package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RedisImage is the Redis image integration/container/redis/Dockerfile
// builds (Debian's redis-server).
const RedisImage = "imapgate-test/redis:7.0"

// The replicated setup's loopback addresses: nginx (mail 143, and the
// http {} upstream on 9180 that auth_http asks) and the imapgates'
// published ports, 127.0.40.31 and up.
const (
	IPReplicasNginx   = "127.0.40.30"
	ipReplicasGateway = "127.0.40.%d"
)

// Replicas is the multi-replica setup of the README, on this machine's
// Docker engine: on a Docker network of its own, a Dovecot (its auth
// penalty on), a Redis and N imapgate containers sharing their limits
// through it; on the host, nginx's mail proxy, whose auth_http asks an
// nginx http {} upstream that spreads the requests over the imapgates'
// published ports (auth_http talks to one address only).
type Replicas struct {
	// IMAPAddr is nginx's IMAP listener.
	IMAPAddr string
	// Dovecot is the backend; its IP is on the Docker network.
	Dovecot *Backend
	// Imapgates are the replicas' attached `docker run` clients (their
	// output is the container's log), nil while one is killed.
	Imapgates []*Process

	env     *Env
	network string
	redis   string
	names   []string
	dir     string
	nginx   *Process
}

// StartReplicas builds what is missing (the Redis and imapgate images)
// and starts the setup with n imapgates. Close removes it.
func (e *Env) StartReplicas(ctx context.Context, n int) (r *Replicas, err error) {
	if !DockerReachable(ctx) {
		return nil, &MissingError{What: "a reachable Docker engine for the replicated setup"}
	}
	if err := e.ensureImage(ctx); err != nil {
		return nil, err
	}
	if err := ensureRedisImage(ctx); err != nil {
		return nil, err
	}
	image, err := e.ImapgateImage(ctx)
	if err != nil {
		return nil, err
	}
	pfx := fmt.Sprintf("imapgate-it-%d-replicas", os.Getpid())
	r = &Replicas{env: e, network: pfx, redis: pfx + "-redis", dir: filepath.Join(e.Dir, "replicas")}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	if err := docker(ctx, "network", "create", "--label", "imapgate-it=1", r.network); err != nil {
		return nil, err
	}
	if err := docker(ctx, "run", "-d", "--name", r.redis, "--label", "imapgate-it=1", "--network", r.network,
		"--network-alias", "redis", RedisImage); err != nil {
		return nil, err
	}
	if r.Dovecot, err = e.startNetworkedDovecot(ctx, pfx+"-dovecot", r.network); err != nil {
		return nil, err
	}
	for i := range n {
		r.names = append(r.names, fmt.Sprintf("%s-imapgate%d", pfx, i+1))
		r.Imapgates = append(r.Imapgates, nil)
		if err := r.StartImapgate(ctx, i, image); err != nil {
			return nil, err
		}
	}
	if err := r.startNginx(ctx, n); err != nil {
		return nil, err
	}
	return r, nil
}

// docker runs a docker command and returns its output in the error.
func docker(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("docker %s: %v: %s", strings.Join(args[:min(2, len(args))], " "), err, out)
	}
	return nil
}

// ensureRedisImage builds RedisImage when it is missing.
func ensureRedisImage(ctx context.Context) error {
	if exec.CommandContext(ctx, "docker", "image", "inspect", RedisImage).Run() == nil {
		return nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	base := exec.CommandContext(ctx, filepath.Join(root, "integration/dovecot/build-image.sh"), "--base-only")
	if out, err := base.CombinedOutput(); err != nil {
		return fmt.Errorf("build-image.sh --base-only: %v\n%s", err, tail(string(out), 20))
	}
	return docker(ctx, "build", "-t", RedisImage, filepath.Join(root, "integration/container/redis"))
}

// startNetworkedDovecot runs the Dovecot image on network (alias
// "dovecot"), with the suite's configuration and its auth penalty on.
func (e *Env) startNetworkedDovecot(ctx context.Context, name, network string) (*Backend, error) {
	// Plain IMAP and POP3 only: the test CA's certificates name loopback
	// addresses, not the one Docker gives the container.
	b := e.newBackend(name, "", "mailhost02", []Listener{{"imap", "imap", "0.0.0.0", 143, false}, {"pop3", "pop3", "0.0.0.0", 110, false}})
	b.mode, b.AuthPenalty = ModeContainer, true
	if err := b.render(); err != nil {
		return nil, err
	}
	b.container = name
	if err := docker(ctx, "run", "-d", "--name", name, "--label", "imapgate-it=1", "--network", network,
		"--network-alias", "dovecot", "-v", b.dir+":"+b.dir, "--tmpfs", "/run/dovecot",
		b.image, "/usr/sbin/dovecot", "-F", "-c", filepath.Join(b.dir, "dovecot.conf")); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.extra = append(e.extra, b)
	e.mu.Unlock()
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).Output()
	if err != nil {
		return nil, fmt.Errorf("docker inspect %s: %v", name, err)
	}
	b.IP = strings.TrimSpace(string(out))
	for i := range b.Listeners {
		b.Listeners[i].Address = b.IP
	}
	if err := b.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("dovecot %s: %w%s", name, err, b.diagnostics())
	}
	return b, nil
}

// GatewayAddr is replica i's published auth_http (and /metrics) address.
func (r *Replicas) GatewayAddr(i int) string {
	return net.JoinHostPort(fmt.Sprintf(ipReplicasGateway, 31+i), "9180")
}

// StartImapgate (re)starts replica i from image ("" = the run's) and
// waits until it accepts connections.
func (r *Replicas) StartImapgate(ctx context.Context, i int, image string) error {
	if image == "" {
		var err error
		if image, err = r.env.ImapgateImage(ctx); err != nil {
			return err
		}
	}
	exec.CommandContext(ctx, "docker", "rm", "-f", r.names[i]).Run()
	cmd := exec.Command("docker", "run", "--name", r.names[i], "--label", "imapgate-it=1", "--network", r.network,
		"-p", r.GatewayAddr(i)+":9180",
		"-e", "IMAPGATE_LISTEN=0.0.0.0:9180", "-e", "IMAPGATE_LOG_FORMAT=json",
		"-e", "IMAPGATE_BACKENDS=mailhost=imap://dovecot:143,pop3://dovecot:110",
		"-e", "IMAPGATE_DEFAULT_BACKEND=mailhost",
		"-e", "IMAPGATE_STATE_URL=redis://redis:6379/0", image)
	p, err := startProcess(fmt.Sprintf("imapgate-replica%d", i+1), filepath.Join(r.dir, fmt.Sprintf("imapgate%d-%d.log", i+1, time.Now().UnixNano())), r.env.pidDir, cmd)
	if err != nil {
		return err
	}
	r.Imapgates[i] = p
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return waitAccept(ctx, p, r.GatewayAddr(i))
}

// KillImapgate kills replica i's container (SIGKILL: no goodbye).
func (r *Replicas) KillImapgate(ctx context.Context, i int) error {
	err := docker(ctx, "kill", r.names[i])
	if p := r.Imapgates[i]; p != nil {
		select {
		case <-p.Exited():
		case <-time.After(20 * time.Second):
		}
	}
	r.Imapgates[i] = nil
	return err
}

// StopRedis stops the Redis container (it saves its data); StartRedis
// starts it again.
func (r *Replicas) StopRedis(ctx context.Context) error  { return docker(ctx, "stop", r.redis) }
func (r *Replicas) StartRedis(ctx context.Context) error { return docker(ctx, "start", r.redis) }

// Close removes the containers and the network and stops nginx.
func (r *Replicas) Close() error {
	var errs []error
	if r.nginx != nil {
		errs = append(errs, r.nginx.Stop(10*time.Second))
	}
	ctx := context.Background()
	for i, name := range append([]string{r.redis}, r.names...) {
		exec.CommandContext(ctx, "docker", "rm", "-f", name).Run()
		if i > 0 && r.Imapgates[i-1] != nil {
			<-r.Imapgates[i-1].Exited()
		}
	}
	if r.Dovecot != nil {
		errs = append(errs, r.Dovecot.Close())
	}
	exec.CommandContext(ctx, "docker", "network", "rm", r.network).Run()
	return errors.Join(errs...)
}

// replicasNginxConf is nginx's mail proxy asking an http {} upstream of
// the imapgates: the README's multi-replica setup.
const replicasNginxConf = `# nginx for the replicated scenario, written by the harness.
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log info;
{{load}}
events {
    worker_connections 512;
}

http {
    access_log off;
    upstream imapgates {
{{servers}}
    }
    server {
        listen {{ip}}:9180;
        location / {
            proxy_pass http://imapgates;
        }
    }
}

mail {
    server_name imapgate-it.test;
    auth_http {{ip}}:9180/mail/auth.php;
    auth_http_timeout 30s;
    proxy on;
    proxy_pass_error_message on;
    imap_auth login plain;
    server {
        listen {{ip}}:143;
        protocol imap;
    }
}
`

func (r *Replicas) startNginx(ctx context.Context, n int) error {
	load, err := mailModule()
	if err != nil {
		return err
	}
	var servers strings.Builder
	for i := range n {
		fmt.Fprintf(&servers, "        server %s;\n", r.GatewayAddr(i))
	}
	conf := strings.NewReplacer("{{dir}}", r.dir, "{{load}}", load, "{{servers}}", servers.String(),
		"{{ip}}", IPReplicasNginx).Replace(replicasNginxConf)
	path := filepath.Join(r.dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := startProcess("nginx-replicas", filepath.Join(r.dir, "nginx.stderr"), r.env.pidDir,
		exec.Command("nginx", "-c", path, "-p", r.dir, "-g", "daemon off;"))
	if err != nil {
		return err
	}
	r.nginx = p
	r.IMAPAddr = net.JoinHostPort(IPReplicasNginx, "143")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return waitGreeting(ctx, Listener{Address: IPReplicasNginx, Port: 143, Name: "nginx"}, nil, func() error { return nil })
}
