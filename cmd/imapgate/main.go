// Command imapgate is an auth_http server for nginx's mail proxy that
// checks every IMAP, POP3 and SMTP login on the user's real mail server
// before nginx lets the client in.
//
// It is configured only by IMAPGATE_* environment variables; see the
// README for the list. With -healthcheck it instead asks a running
// imapgate's /healthz (for a container's HEALTHCHECK) and exits 0 when it
// answers; with -version it prints its version and exits. -check-config
// checks the settings without serving (exit 0 and "ok", or 2 and one line
// per problem); -print-config prints the settings in effect as an
// environment file, secrets redacted. `imapgate admin VERB …` is the
// operator's command line (see the admin package).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/admin"
)

// Exit statuses.
const (
	exitFailure = 1 // the server failed while running, or is not healthy
	exitConfig  = 2 // a setting is missing or bad
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "admin" {
		// The operator's command line: a client of the running imapgate's
		// admin API, configured by the same environment.
		os.Exit(admin.Main(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	healthcheck := flag.Bool("healthcheck", false, "ask the imapgate configured by the environment for /healthz and exit 0 if it answers")
	version := flag.Bool("version", false, "print the version, VCS revision and Go release, and exit")
	checkConfig := flag.Bool("check-config", false, "check the settings as a start would, and that backend names resolve and directories answer, without serving; print ok (exit 0) or one line per problem (exit 2)")
	printConfig := flag.Bool("print-config", false, "print the settings in effect, each with its source (default, environment, file), secrets redacted, as an environment file")
	flag.Parse()
	if *version {
		fmt.Println(readBuildInfo())
		os.Exit(0)
	}
	if *checkConfig {
		os.Exit(runCheckConfig(context.Background(), envconfig.OsLookuper(), os.Environ(), os.Stdout))
	}
	if *printConfig {
		os.Exit(runPrintConfig(context.Background(), envconfig.OsLookuper(), os.Stdout, os.Stderr))
	}
	if *healthcheck {
		os.Exit(runHealthcheck())
	}
	os.Exit(run())
}

func run() int {
	ctx := context.Background()
	logOut := newLogBuffer(os.Stderr)
	defer logOut.Flush()
	s, err := loadSettings(ctx, envconfig.OsLookuper(), logOut)
	if err != nil {
		logOut.Flush()
		fmt.Fprintf(os.Stderr, "imapgate: %s\n", strings.ReplaceAll(err.Error(), "\n", "\nimapgate: "))
		return exitConfig
	}
	svc := newService(s)
	svc.logFlusher = logOut.flushEvery
	lns, err := listen(ctx, s.config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imapgate: %v\n", err)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go followMemory(ctx)
	if err := svc.serve(ctx, lns); err != nil {
		svc.logger.Error("stopped", "err", err)
		return exitFailure
	}
	return 0
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
		addr = defaultConfig().Listen
	}
	client := &http.Client{Timeout: 3 * time.Second}
	url := "http://localhost" + pathHealthz
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	} else {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imapgate: healthcheck: %v\n", err)
			return exitFailure
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		url = "http://" + net.JoinHostPort(host, port) + pathHealthz
	}
	resp, err := client.Get(url)
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
