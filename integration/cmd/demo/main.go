// Command demo runs imapgate's main job on this machine for a person to try:
// two Dovecot backends, imapgate and the nginx mail proxy on loopback, with
// the PHP seed's routing (a, c, f, g → mailhost01, others → mailhost02). It
// prints the test accounts and copy-paste logins, then waits for Ctrl-C (or
// q, or SIGTERM) and stops everything, keeping the logs.
//
//	go run ./integration/cmd/demo        (make demo)
//
// IMAPGATE_IT_DOVECOT=process|container|auto chooses how Dovecot runs, as
// for the integration tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// firstLetters are the users mailhost01 has (IMAPGATE_FIRST_LETTER); all
// others go to mailhost02.
const firstLetters = "acfg"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	restore := stopOnKey(stop)
	err := run(ctx)
	restore()
	stop()
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		var missing *harness.MissingError
		if errors.As(err, &missing) {
			fmt.Fprintln(os.Stderr, "demo: install what is missing with: sudo integration/install-deps.sh")
		}
		os.Exit(1)
	}
	// Stopped by the user (Ctrl-C, q, SIGTERM): that is success, also when
	// it came before the demo was ready.
}

// stopOnKey makes Ctrl-C (or q) a key the demo reads instead of a signal,
// when standard input is a terminal: the terminal sends SIGINT to the
// whole foreground process group, and make, which runs the demo, then
// exits 130 however cleanly the demo stops; every process the demo
// started would also stop at once, not in order. It returns the function
// that restores the terminal's settings. Without a terminal nothing
// changes, and SIGINT stops the demo as before.
func stopOnKey(stop func()) (restore func()) {
	saved, err := stty("-g")
	if err != nil {
		return func() {}
	}
	if _, err := stty("-isig", "-icanon", "-echo", "min", "1", "time", "0"); err != nil {
		stty(saved)
		return func() {}
	}
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(b); err != nil {
				return
			}
			switch b[0] {
			case 3, 4, 'q': // Ctrl-C, Ctrl-D, q
				stop()
				return
			}
		}
	}()
	return func() { stty(saved) }
}

// stty runs stty(1) on standard input, the terminal.
func stty(args ...string) (string, error) {
	cmd := exec.Command("stty", args...)
	cmd.Stdin = os.Stdin
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

func run(ctx context.Context) error {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	// The run directory (logs, the CA) stays after the demo, so that the
	// paths it printed still work; the next integration run removes it
	// (keepLogs copies the logs out of its way).
	os.Setenv(harness.EnvKeep, "1")
	startCtx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	env, err := harness.Start(startCtx, harness.Options{Logf: logf})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stopping:", err)
		}
	}()
	gw, err := env.StartGateway(ctx, harness.GatewayConfig{
		Name: "demo",
		IP:   harness.IPDemoGateway,
		TLS:  true,
		Env: map[string]string{
			"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
			"IMAPGATE_FIRST_LETTER":    firstLetters + "=mailhost01",
			"IMAPGATE_DEFAULT_BACKEND": "mailhost02",
			"IMAPGATE_LOG_FORMAT":      "text",
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		// The demo's own logins used real passwords; the leak check
		// still applies to imapgate's log.
		if err := gw.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		keepLogs(gw)
	}()
	printGuide(env, gw)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\ndemo: stopping nginx, imapgate and Dovecot")
	return nil
}

// logsDir is where the demo copies its logs when it stops: the run
// directory it points to while running is removed by the next integration
// run, which may start as soon as the demo lets go of the run lock.
var logsDir = filepath.Join(os.TempDir(), "imapgate-demo")

// keepLogs copies imapgate's and nginx's logs into logsDir and says where.
func keepLogs(gw *harness.Gateway) {
	dir := filepath.Dir(gw.Imapgate.LogPath)
	if err := os.MkdirAll(logsDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "demo: keeping the logs:", err)
		return
	}
	var kept []string
	for _, name := range []string{"imapgate.log", "nginx-error.log"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			err = os.WriteFile(filepath.Join(logsDir, name), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: keeping the logs:", err)
			continue
		}
		kept = append(kept, filepath.Join(logsDir, name))
	}
	fmt.Fprintf(os.Stderr, "demo: stopped; the logs are kept (until the next demo) in\n  %s\n", strings.Join(kept, "\n  "))
}

// reachable reports whether the demo's routing sends user to backend: the
// passwd-files have some users on both backends, and a login with the
// password of the backend the rule does not pick is a wrong password (and
// counts toward the guessing limits).
func reachable(backend, user string) bool {
	onFirst := strings.ContainsRune(firstLetters, rune(strings.ToLower(user)[0]))
	return onFirst == (backend == "mailhost01")
}

func printGuide(env *harness.Env, gw *harness.Gateway) {
	fmt.Printf(`
imapgate demo is running (Dovecot in %s mode). Ctrl-C (or q) stops everything.

  nginx mail proxy   IMAP %s   POP3 %s   SMTP %s
                     STARTTLS on those; implicit TLS: IMAPS %s   POP3S %s   SMTPS %s
  imapgate           http://%s/mail/auth.php   (log: %s)
  mailhost01         %s   users starting with a, c, f, g
  mailhost02         %s   everyone else
  SMTP relay         stand-in on port 25 of each backend (records what it accepts)

Test accounts (user  password), each on the backend the first-letter rule picks:
`, env.Mode, gw.IMAPAddr, gw.POP3Addr, gw.SMTPAddr, gw.IMAPSAddr, gw.POP3SAddr, gw.SMTPSAddr,
		gw.AuthAddr, gw.Imapgate.LogPath, harness.IPMailhost01, harness.IPMailhost02)
	for _, name := range []string{"mailhost01", "mailhost02"} {
		fmt.Printf("  on %s:\n", name)
		for _, a := range env.Backends[name].Accounts {
			if reachable(name, a.User) {
				fmt.Printf("    %-8s %q\n", a.User, a.Password)
			}
		}
	}
	alice := env.Password("mailhost01", "alice")
	bob := env.Password("mailhost02", "bob")
	fmt.Printf(`
  (nginx splits POP3 PASS at spaces: the user "space" logs in over IMAP, SMTP and
  POP3 AUTH PLAIN, but not with POP3 USER/PASS.)

TLS: the certificate is for %[1]s, signed by the demo's own CA. Trust it with
  %[6]s
  curl --cacert <that file>       openssl s_client -CAfile <that file> -connect %[1]s:993
  mutt: set ssl_ca_certificates_file=<that file>
  fetchmail: sslcertfile <that file> sslcertck sslcommonname localhost
             (fetchmail matches the certificate's names, not its IP address)
  Python: ssl.create_default_context(cafile="<that file>")

Try it (through nginx, which asks imapgate, which logs in to the backend):

  # right password: lists alice's mailboxes (imaps:// for implicit TLS, --ssl-reqd for STARTTLS)
  curl -v --cacert %[6]s --url 'imaps://%[1]s/' --user 'alice:%[2]s'
  # wrong password: refused by imapgate ("Invalid login or password"), never proxied
  curl -v --url 'imap://%[1]s/' --user 'alice:not-her-password'
  # POP3 with STARTTLS
  curl -v --cacert %[6]s --ssl-reqd --url 'pop3://%[1]s/' --user 'bob:%[3]s'
  # SMTP AUTH: a wrong password gets 535 and relays nothing
  curl -v --url 'smtp://%[1]s/' --mail-from bob@example.test --mail-rcpt alice@example.test \
       --user 'bob:%[3]s' --upload-file - <<<'Subject: hello from the imapgate demo'
  # the same with swaks over STARTTLS (its TLS needs Debian's libnet-ssleay-perl)
  swaks --server %[1]s:25 --tls --tls-ca-path %[6]s --tls-verify --auth PLAIN \
        --auth-user bob --auth-password '%[3]s' --from bob@example.test --to alice@example.test
  # ask imapgate directly, as nginx does
  curl -s -D - -o /dev/null http://%[4]s/mail/auth.php -H 'Auth-Method: plain' \
       -H 'Auth-User: alice' -H 'Auth-Pass: %[2]s' -H 'Auth-Protocol: imap' \
       -H 'Auth-Login-Attempt: 1' -H 'Client-IP: 127.0.0.1'

imapgate's log follows: tail -f %[5]s
(copied to %[7]s when the demo stops)
`, gw.IP, alice, bob, gw.AuthAddr, gw.Imapgate.LogPath, env.CAFile, logsDir)
}
