package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/http1"
)

// usersFilePoll is how often the users file is checked for changes.
const usersFilePoll = time.Second

// maxHeaderBytes bounds a request head. nginx's request is a few hundred
// bytes; 16 KiB leaves room for auth_http_header lines and a client
// certificate.
const maxHeaderBytes = 16 << 10

// listeners are the service's sockets: auth_http, and the operations
// endpoints and the admin API when they have a listener of their own
// (else nil).
type listeners struct {
	auth, ops, admin net.Listener
}

// unixPrefix starts a listen address that is a unix socket's path, as
// nginx's auth_http names one (unix:/run/imapgate.sock).
const unixPrefix = "unix:"

// listen opens the listeners the settings name.
func listen(ctx context.Context, cfg config) (listeners, error) {
	var lns listeners
	var err error
	if lns.auth, err = listenAuth(ctx, cfg.Listen); err != nil {
		return lns, settingError("LISTEN", "%v", err)
	}
	if cfg.MetricsListen != "" {
		if lns.ops, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			lns.auth.Close()
			return lns, settingError("METRICS_LISTEN", "%v", err)
		}
	}
	if cfg.AdminListen != "" {
		if lns.admin, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			lns.auth.Close()
			if lns.ops != nil {
				lns.ops.Close()
			}
			return lns, settingError("ADMIN_LISTEN", "%v", err)
		}
	}
	return lns, nil
}

// listenAuth opens the auth_http listener: TCP, or a unix socket for
// "unix:/path" (nginx on the same host then spends no TCP handshake per
// login). A socket file left by an earlier run is replaced; the socket is
// made writable by everyone, since nginx's workers run as another user:
// restrict access with the permissions of its directory.
func listenAuth(ctx context.Context, addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(path, 0o666); err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	}
	// TCP keepalive probes are no use on connections that carry one
	// request, and setting them costs four system calls per connection.
	lc := net.ListenConfig{KeepAlive: -1, Control: deferAccept}
	return lc.Listen(ctx, "tcp", addr)
}

// server is what serve needs of an HTTP server: http1.Server and
// http.Server both are one.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// serve answers requests on lns.auth (the operations endpoints on
// lns.ops and the admin API on lns.admin, when not nil) until ctx ends,
// then lets the requests in flight finish.
func (s *service) serve(ctx context.Context, lns listeners) error {
	bg, stopBackground := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer background.Wait()
	defer stopBackground()
	servers := []server{s.authServer(lns.ops == nil)}
	s.startBackground(bg, &background, servers[0])
	listeners, roles := []net.Listener{lns.auth}, []string{"auth"}
	if lns.ops == nil {
		roles[0] = "auth+ops"
	} else {
		servers, listeners, roles = append(servers, s.newServer(s.opsHandler())), append(listeners, lns.ops), append(roles, "ops")
	}
	if lns.admin != nil {
		servers, listeners, roles = append(servers, s.newServer(s.admin.Handler())), append(listeners, lns.admin), append(roles, "admin")
	}
	serveErr := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { serveErr <- srv.Serve(listeners[i]) }()
		attrs := []any{"addr", listeners[i].Addr().String(), "ops", roles[i] != "auth" && roles[i] != "admin", "serves", roles[i]}
		if i == 0 && s.cfg.HTTPServer == httpServerBuiltin {
			attrs = append(attrs, "max_conns", s.maxConns)
		}
		s.logger.Info("listening", attrs...)
	}

	var err error
	select {
	case err = <-serveErr:
		// A listener failed: stop the others too.
	case <-ctx.Done():
		s.logger.Info("stopping", "reason", "signal")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.handler.Timeout+5*time.Second)
	defer cancel()
	for _, srv := range servers {
		if serr := srv.Shutdown(shutdownCtx); serr != nil && err == nil {
			err = fmt.Errorf("shutdown: %w", serr)
		}
	}
	if s.state != nil {
		s.state.Close()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	s.logger.Info("stopped")
	return nil
}

// startBackground starts the probes, the log flusher, the users file's
// reloads and the memory release after a crowd of connections, which run
// until ctx ends.
func (s *service) startBackground(ctx context.Context, wg *sync.WaitGroup, auth server) {
	wg.Go(func() { s.health.Run(ctx) })
	for _, d := range s.directories {
		wg.Go(func() {
			d.Run(ctx, s.cfg.ProbeInterval)
			d.Close()
		})
	}
	if srv, ok := auth.(*http1.Server); ok {
		wg.Go(func() { releaseAfterCrowd(ctx, srv.Open, crowdCheck, crowdGone) })
	}
	if s.logFlusher != nil {
		wg.Go(func() { s.logFlusher(ctx) })
	}
	if s.usersFile != nil {
		wg.Go(func() { s.usersFile.Watch(ctx, usersFilePoll) })
		wg.Go(func() { s.reloadOnHangup(ctx) })
	}
}

// authServer is the auth_http server IMAPGATE_HTTP_SERVER asks for,
// serving the operations endpoints too when withOps is set.
func (s *service) authServer(withOps bool) server {
	if s.cfg.HTTPServer == httpServerNetHTTP {
		h := http1.NetHTTP(s.handler, auth.RequestFields)
		if withOps {
			mux := http.NewServeMux()
			mux.Handle("/", h)
			ops := s.opsHandler()
			for _, p := range opsPaths {
				mux.Handle(p, ops)
			}
			h = mux
		}
		return s.newServer(h)
	}
	srv := &http1.Server{
		Handler:        s.handler,
		Fields:         auth.RequestFields,
		ReadTimeout:    5 * time.Second,
		WriteTimeout:   5 * time.Second,
		IdleTimeout:    30 * time.Second,
		MaxHeaderBytes: maxHeaderBytes,
		Logger:         s.logger,
		// Peers outside IMAPGATE_ALLOW_FROM are closed before a byte is
		// read, and a crowd cannot take the descriptors the checks need.
		MaxConns: s.maxConns,
		Accept:   s.acceptFrom,
	}
	srv.OnDrop = newConnMetrics(s.registry, srv, s.maxConns).drop
	if withOps {
		srv.Fallback = s.opsHandler()
		srv.FallbackPaths = opsPaths
	}
	return srv
}

// newServer returns a net/http server: the operations endpoints', or the
// auth listener's with IMAPGATE_HTTP_SERVER=net/http.
func (s *service) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      s.handler.Timeout + 5*time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
}

// reloadOnHangup rereads the users file on SIGHUP until ctx ends.
func (s *service) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			s.logger.Info("rereading the users file", "path", s.cfg.UsersFile, "reason", "SIGHUP")
			// Reload logs the result: the new table, or why the file is
			// broken and the last good table stays.
			s.usersFile.Reload(ctx)
		case <-ctx.Done():
			return
		}
	}
}
