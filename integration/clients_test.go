package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// imapLogin logs in through addr with go-imap's client and, when that
// works, selects INBOX (a real proxied session) and logs out. The error is
// what the client read: an *imap.Error carries nginx's text.
func imapLogin(ctx context.Context, d *net.Dialer, addr, user, pass string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	// go-imap's client has no context support: end it by closing.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := c.Login(user, pass).Wait(); err != nil {
		return err
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		return fmt.Errorf("select INBOX after login: %w", err)
	}
	return c.Logout().Wait()
}

// imapErrorText returns the text of an IMAP NO/BAD, or the error itself.
func imapErrorText(err error) string {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Text
	}
	return err.Error()
}

// pop3Client is the smallest POP3 client (RFC 1939) the scenarios need.
type pop3Client struct {
	conn net.Conn
	r    *bufio.Reader
}

// pop3Error is a -ERR reply.
type pop3Error struct{ Text string }

func (e *pop3Error) Error() string { return "pop3: -ERR " + e.Text }

func dialPOP3(ctx context.Context, d *net.Dialer, addr string) (*pop3Client, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c := &pop3Client{conn: conn, r: bufio.NewReader(conn)}
	if _, err := c.reply(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

func (c *pop3Client) reply() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if text, ok := strings.CutPrefix(line, "+OK"); ok {
		return strings.TrimSpace(text), nil
	}
	if text, ok := strings.CutPrefix(line, "-ERR"); ok {
		return "", &pop3Error{Text: strings.TrimSpace(text)}
	}
	return "", fmt.Errorf("pop3: unexpected reply %q", line)
}

func (c *pop3Client) cmd(format string, args ...any) (string, error) {
	line := fmt.Sprintf(format, args...)
	if strings.ContainsAny(line, "\r\n") {
		return "", errors.New("pop3: CR or LF in a command")
	}
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return "", err
	}
	return c.reply()
}

// pop3Login logs in through addr with USER/PASS (or AUTH PLAIN when
// authPlain), runs STAT on the proxied session and quits.
func pop3Login(ctx context.Context, d *net.Dialer, addr, user, pass string, authPlain bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := dialPOP3(ctx, d, addr)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	if authPlain {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		if _, err := c.cmd("AUTH PLAIN %s", ir); err != nil {
			return err
		}
	} else {
		if _, err := c.cmd("USER %s", user); err != nil {
			return err
		}
		if _, err := c.cmd("PASS %s", pass); err != nil {
			return err
		}
	}
	if _, err := c.cmd("STAT"); err != nil {
		return fmt.Errorf("STAT after login: %w", err)
	}
	_, err = c.cmd("QUIT")
	return err
}

// smtpSend authenticates through addr with AUTH PLAIN (net/smtp) and sends
// one message from → to whose body carries token.
func smtpSend(ctx context.Context, d *net.Dialer, addr, user, pass, from, to, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := smtpAuthenticated(ctx, d, addr, user, pass)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nimapgate integration test %s\r\n", from, to, token, token)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// smtpAuthenticated connects to addr and authenticates with AUTH PLAIN
// (net/smtp), within ctx; the error carries the server's reply.
func smtpAuthenticated(ctx context.Context, d *net.Dialer, addr, user, pass string) (*smtp.Client, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// "localhost": net/smtp only sends PLAIN in the clear to a local server.
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Auth(smtp.PlainAuth("", user, pass, "localhost")); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
