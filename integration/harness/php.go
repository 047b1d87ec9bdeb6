package harness

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// phpSeed is the benchmark's auth.php: the PHP seed's logic (first-letter
// routing, OK without a password check).
//
//go:embed php/auth.php
var phpSeed string

// phpFPM is php-fpm from Debian's php-fpm package.
const phpFPM = "/usr/sbin/php-fpm8.2"

const phpFPMConf = `[global]
pid = {{dir}}/php-fpm.pid
error_log = {{dir}}/php-fpm.log
daemonize = no

[auth]
listen = {{dir}}/php-fpm.sock
listen.mode = 0666
user = nobody
group = nogroup
; One worker per core and one more, as a tuned seed deployment would.
pm = static
pm.max_children = 3
`

const phpNginxConf = `worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    server {
        listen {{listen}};
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {{dir}}/auth.php;
            fastcgi_param BACKEND_IP {{server}};
            fastcgi_pass unix:{{dir}}/php-fpm.sock;
        }
    }
}
`

// StartPHPSeed starts the PHP seed as operators run it: auth.php on
// php-fpm behind an nginx http server on listen, answering OK for every
// user with server (every backend's address) and the protocol's port. It
// returns both processes; stop nginx first.
func (e *Env) StartPHPSeed(ctx context.Context, name, listen, server string) (fpm, nginx *Process, err error) {
	if _, err := os.Stat(phpFPM); err != nil {
		return nil, nil, &MissingError{What: phpFPM + " (php-fpm; run integration/install-deps.sh)"}
	}
	dir := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	r := strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen, "{{server}}", server)
	for file, body := range map[string]string{"auth.php": phpSeed, "php-fpm.conf": r.Replace(phpFPMConf), "nginx.conf": r.Replace(phpNginxConf)} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
			return nil, nil, err
		}
	}
	fpm, err = startProcess("php-fpm-"+name, filepath.Join(dir, "php-fpm.stderr"), e.pidDir,
		exec.Command(phpFPM, "--nodaemonize", "--fpm-config", filepath.Join(dir, "php-fpm.conf")))
	if err != nil {
		return nil, nil, err
	}
	if err := waitFile(ctx, fpm, filepath.Join(dir, "php-fpm.sock")); err != nil {
		fpm.Stop(5 * time.Second)
		return nil, nil, err
	}
	nginx, err = startProcess("nginx-"+name, filepath.Join(dir, "nginx.stderr"), e.pidDir,
		exec.Command("nginx", "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-g", "daemon off;"))
	if err == nil {
		err = waitAccept(ctx, nginx, listen)
	}
	if err != nil {
		if nginx != nil {
			nginx.Stop(5 * time.Second)
		}
		fpm.Stop(5 * time.Second)
		return nil, nil, err
	}
	return fpm, nginx, nil
}

// waitFile waits until path exists, failing when p exits first.
func waitFile(ctx context.Context, p *Process, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited: %s", p.Name, tail(p.Output(), 10))
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
