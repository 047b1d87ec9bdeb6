package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// env is the run's shared environment, started once in TestMain; envErr says
// why it could not be.
var (
	env    *harness.Env
	envErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		envErr = errors.New("-short: integration scenarios skipped")
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	start := time.Now()
	opts := harness.Options{}
	if testing.Verbose() {
		opts.Logf = log.Printf
	}
	env, envErr = harness.Start(ctx, opts)
	cancel()
	if env != nil && testing.Verbose() {
		log.Printf("imapgate-it: environment ready in %v", time.Since(start).Round(time.Millisecond))
	}
	// Ctrl-C: stop what was started rather than leave it to the next run.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		if env != nil {
			env.Close()
		}
		os.Exit(130)
	}()
	code := m.Run()
	if env != nil {
		if err := env.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "imapgate-it: cleanup:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// requireEnv returns the shared environment, or skips the test when this
// machine lacks a dependency (fails instead under CI=true).
func requireEnv(t *testing.T) *harness.Env {
	t.Helper()
	if envErr != nil {
		var missing *harness.MissingError
		if errors.As(envErr, &missing) && os.Getenv("CI") != "true" || testing.Short() {
			t.Skipf("integration environment unavailable: %v (under CI=true this fails)", envErr)
		}
		t.Fatalf("integration environment: %v", envErr)
	}
	return env
}

// ctxFor returns a context bounded by d and by the test's deadline.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// startGateway starts imapgate (with settings) behind its own nginx and
// stops both when the test ends, failing it when a password shows up in
// imapgate's log or imapgate does not stop cleanly.
func startGateway(t *testing.T, settings map[string]string) *harness.Gateway {
	t.Helper()
	e := requireEnv(t)
	gw, err := e.StartGateway(ctxFor(t, time.Minute), harness.GatewayConfig{Env: settings})
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(func() {
		if err := gw.Close(); err != nil {
			t.Errorf("gateway %s: %v", gw.Name, err)
		}
		if t.Failed() {
			t.Logf("imapgate log (%s):\n%s", gw.Imapgate.LogPath, lastLines(gw.Imapgate.Output(), 40))
		}
	})
	return gw
}

// seedSettings is the PHP seed's setup: a, c, f, g → mailhost01, the others
// → mailhost02.
func seedSettings() map[string]string {
	return map[string]string{
		"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
		"IMAPGATE_FIRST_LETTER":    "acfg=mailhost01",
		"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
