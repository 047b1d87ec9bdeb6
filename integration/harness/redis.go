package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// debianRedisConf is the configuration Debian's redis-server package
// ships; a Redis the harness starts runs with it, only moved to its own
// address, directory and log, in the foreground.
const debianRedisConf = "/etc/redis/redis.conf"

// Redis is a redis-server (Debian's package) the harness runs as a
// process, for the shared-state scenarios.
type Redis struct {
	// Name names its directory and process; Addr is its host:port.
	Name, Addr string
	dir        string
	pidDir     string
	proc       *Process
}

// StartRedis starts redis-server on ip:port with Debian's configuration
// (its persistence included), and waits until it answers PING. Close (or
// the Env's Close) stops it.
func (e *Env) StartRedis(ctx context.Context, name, ip string, port int) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, &MissingError{What: "redis-server (run integration/install-deps.sh)"}
	}
	r := &Redis{Name: name, Addr: net.JoinHostPort(ip, strconv.Itoa(port)), dir: filepath.Join(e.Dir, name), pidDir: e.pidDir}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.redis = append(e.redis, r)
	e.mu.Unlock()
	return r, nil
}

// URL is the store's URL for IMAPGATE_STATE_URL.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start starts the server (again, after Stop, with the data it saved).
func (r *Redis) Start(ctx context.Context) error {
	host, port, _ := net.SplitHostPort(r.Addr)
	var args []string
	if _, err := os.Stat(debianRedisConf); err == nil {
		args = append(args, debianRedisConf)
	}
	args = append(args, "--daemonize", "no", "--supervised", "no", "--bind", host, "--port", port,
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"), "--pidfile", filepath.Join(r.dir, "redis.pid"))
	p, err := startProcess("redis-"+r.Name, filepath.Join(r.dir, "redis.stderr"), r.pidDir, exec.Command("redis-server", args...))
	if err != nil {
		return err
	}
	r.proc = p
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if err := redisPing(r.Addr); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			return fmt.Errorf("redis-server exited: %s\n%s", p.Output(), tail(string(log), 10))
		case <-ctx.Done():
			return fmt.Errorf("redis-server on %s does not answer PING: %w", r.Addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the server with SIGTERM (it saves its data, as configured).
func (r *Redis) Stop() error {
	if r.proc == nil {
		return nil
	}
	err := r.proc.Stop(10 * time.Second)
	r.proc = nil
	return err
}

// Close stops the server if it runs.
func (r *Redis) Close() error { return r.Stop() }

// redisPing sends PING to addr and wants +PONG.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("redis: " + strings.TrimSpace(line))
	}
	return nil
}
