// Command imapgate is an auth_http server for nginx's mail proxy that
// checks every IMAP, POP3 and SMTP login on the user's real mail server
// before nginx lets the client in.
//
// It is configured only by IMAPGATE_* environment variables; see the
// README for the list. With -healthcheck it instead asks a running
// imapgate's /healthz (for a container's HEALTHCHECK) and exits 0 when it
// answers; with -version it prints its version and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth"
)

// Exit statuses.
const (
	exitFailure = 1 // the server failed while running, or is not healthy
	exitConfig  = 2 // a setting is missing or bad
)

// usersFilePoll is how often the users file is checked for changes.
const usersFilePoll = time.Second

func main() {
	healthcheck := flag.Bool("healthcheck", false, "ask the imapgate configured by the environment for /healthz and exit 0 if it answers")
	version := flag.Bool("version", false, "print the version, VCS revision and Go release, and exit")
	flag.Parse()
	if *version {
		fmt.Println(readBuildInfo())
		os.Exit(0)
	}
	if *healthcheck {
		os.Exit(runHealthcheck())
	}
	os.Exit(run())
}

func run() int {
	ctx := context.Background()
	cfg, err := loadConfig(ctx, envconfig.OsLookuper())
	if err != nil {
		fmt.Fprintf(os.Stderr, "imapgate: %v\n", err)
		return exitConfig
	}
	logOut := newLogBuffer(os.Stderr)
	defer logOut.Flush()
	svc, err := newService(cfg, logOut)
	if err != nil {
		logOut.Flush()
		fmt.Fprintf(os.Stderr, "imapgate: %v\n", err)
		return exitConfig
	}
	svc.logFlusher = logOut.flushEvery
	svc.registerServiceMetrics()
	// TCP keepalive probes are no use on connections that carry one
	// request, and setting them costs four system calls per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imapgate: IMAPGATE_LISTEN: %v\n", err)
		return exitConfig
	}
	var opsLn net.Listener
	if cfg.MetricsListen != "" {
		if opsLn, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			fmt.Fprintf(os.Stderr, "imapgate: IMAPGATE_METRICS_LISTEN: %v\n", err)
			return exitConfig
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := svc.serve(ctx, ln, opsLn); err != nil {
		svc.logger.Error("stopped", "err", err)
		return exitFailure
	}
	return 0
}

// serve answers requests on ln (and the operations endpoints on opsLn,
// when not nil) until ctx ends, then lets the requests in flight finish.
func (s *service) serve(ctx context.Context, ln, opsLn net.Listener) error {
	bg, stopBackground := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer background.Wait()
	defer stopBackground()

	background.Go(func() { s.health.Run(bg) })
	if s.logFlusher != nil {
		background.Go(func() { s.logFlusher(bg) })
	}
	if s.usersFile != nil {
		background.Go(func() { s.usersFile.Watch(bg, usersFilePoll) })
		background.Go(func() { s.reloadOnHangup(bg) })
	}

	// The auth listener is imapgate's own small HTTP server (see
	// auth.Server); the operations endpoints are plain net/http.
	type server interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	}
	authSrv := &auth.Server{
		Handler:        s.handler,
		ReadTimeout:    5 * time.Second,
		WriteTimeout:   5 * time.Second,
		IdleTimeout:    30 * time.Second,
		MaxHeaderBytes: maxHeaderBytes,
		Logger:         s.logger,
	}
	servers := []server{authSrv}
	listeners := []net.Listener{ln}
	if opsLn != nil {
		servers = append(servers, s.newServer(s.opsHandler()))
		listeners = append(listeners, opsLn)
	} else {
		authSrv.Fallback = s.opsHandler()
		authSrv.FallbackPaths = []string{pathMetrics, pathHealthz, pathReadyz}
	}
	serveErr := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { serveErr <- srv.Serve(listeners[i]) }()
		s.logger.Info("listening", "addr", listeners[i].Addr().String(), "ops", i > 0 || opsLn == nil)
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
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	s.logger.Info("stopped")
	return nil
}

// maxHeaderBytes bounds a request head. nginx's request is a few hundred
// bytes; 16 KiB leaves room for auth_http_header lines and a client
// certificate.
const maxHeaderBytes = 16 << 10

// newServer returns the net/http server of the operations endpoints.
func (s *service) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      30 * time.Second,
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
			s.usersFile.Reload()
		case <-ctx.Done():
			return
		}
	}
}

// runHealthcheck asks the running imapgate for /healthz, on the
// operations listener if there is one. Only the listen settings are
// read, so it works in a container whose other settings it need not know.
func runHealthcheck() int {
	addr := os.Getenv(envPrefix + "METRICS_LISTEN")
	if addr == "" {
		addr = os.Getenv(envPrefix + "LISTEN")
	}
	if addr == "" {
		addr = "127.0.0.1:9180"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imapgate: healthcheck: %v\n", err)
		return exitFailure
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + pathHealthz)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imapgate: healthcheck: %v\n", err)
		return exitFailure
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "imapgate: healthcheck: %s\n", resp.Status)
		return exitFailure
	}
	return 0
}
