// Command demo runs imapgate's main job on this machine for a person to try:
// two Dovecot backends, imapgate and the nginx mail proxy on loopback, with
// the PHP seed's routing (a, c, f, g → mailhost01, others → mailhost02). It
// prints the test accounts and copy-paste logins, then waits for Ctrl-C or
// SIGTERM and stops everything.
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
	"os/signal"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		var missing *harness.MissingError
		if errors.As(err, &missing) {
			fmt.Fprintln(os.Stderr, "demo: install what is missing with: sudo integration/install-deps.sh")
		}
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
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
		Env: map[string]string{
			"IMAPGATE_BACKENDS":        fmt.Sprintf("mailhost01=%s;mailhost02=%s", harness.IPMailhost01, harness.IPMailhost02),
			"IMAPGATE_FIRST_LETTER":    "acfg=mailhost01",
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
	}()
	printGuide(env, gw)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\ndemo: stopping nginx, imapgate and Dovecot")
	return nil
}

func printGuide(env *harness.Env, gw *harness.Gateway) {
	fmt.Printf(`
imapgate demo is running (Dovecot in %s mode). Ctrl-C stops everything.

  nginx mail proxy   IMAP %s   POP3 %s   SMTP %s
  imapgate           http://%s/mail/auth.php   (log: %s)
  mailhost01         %s   users starting with a, c, f, g
  mailhost02         %s   everyone else
  SMTP relay         stand-in on port 25 of each backend (records what it accepts)

Test accounts (user  password):
`, env.Mode, gw.IMAPAddr, gw.POP3Addr, gw.SMTPAddr, gw.AuthAddr, gw.Imapgate.LogPath, harness.IPMailhost01, harness.IPMailhost02)
	for _, name := range []string{"mailhost01", "mailhost02"} {
		fmt.Printf("  on %s:\n", name)
		for _, a := range env.Backends[name].Accounts {
			fmt.Printf("    %-8s %q\n", a.User, a.Password)
		}
	}
	alice := env.Password("mailhost01", "alice")
	bob := env.Password("mailhost02", "bob")
	fmt.Printf(`
Try it (through nginx, which asks imapgate, which logs in to the backend):

  # right password: lists alice's mailboxes
  curl -v --url 'imap://%[1]s/' --user 'alice:%[2]s'
  # wrong password: refused by imapgate ("Invalid login or password"), never proxied
  curl -v --url 'imap://%[1]s/' --user 'alice:not-her-password'
  # POP3
  curl -v --url 'pop3://%[1]s/' --user 'bob:%[3]s'
  # SMTP AUTH: a wrong password gets 535 and relays nothing
  curl -v --url 'smtp://%[1]s/' --mail-from bob@example.test --mail-rcpt alice@example.test \
       --user 'bob:%[3]s' --upload-file - <<<'Subject: hello from the imapgate demo'
  # ask imapgate directly, as nginx does
  curl -s -D - -o /dev/null http://%[4]s/mail/auth.php -H 'Auth-Method: plain' \
       -H 'Auth-User: alice' -H 'Auth-Pass: %[2]s' -H 'Auth-Protocol: imap' \
       -H 'Auth-Login-Attempt: 1' -H 'Client-IP: 127.0.0.1'

imapgate's log follows: tail -f %[5]s
`, gw.IP, alice, bob, gw.AuthAddr, gw.Imapgate.LogPath)
}
