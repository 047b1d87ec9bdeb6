package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// readmeNginxIP is where TestReadmeNginxSnippet's nginx listens.
const readmeNginxIP = "127.0.30.3"

// TestReadmeNginxSnippet runs the README's nginx mail {} block, as printed
// there but for its listen addresses (ports on readmeNginxIP), its
// certificate (one for that address from the test CA) and auth_http (a
// gateway's imapgate): STARTTLS and the implicit-TLS ports log in, and
// SMTP without AUTH gets the answer the README's table says nginx gives.
func TestReadmeNginxSnippet(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ctx := ctxFor(t, 2*time.Minute)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## nginx\n.*?```nginx\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no ```nginx block under ## nginx")
	}
	snippet := string(m[1])
	gw := startGateway(t, seedSettings())

	dir := t.TempDir()
	cert, key, err := e.CA.Issue([]net.IP{net.ParseIP(readmeNginxIP)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"mail.crt": cert, "mail.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replace := func(re, with string) {
		t.Helper()
		r := regexp.MustCompile(re)
		if !r.MatchString(snippet) {
			t.Fatalf("README's nginx block has no match of %s", re)
		}
		snippet = r.ReplaceAllString(snippet, with)
	}
	replace(`auth_http\s+\S+;`, "auth_http "+gw.AuthAddr+"/mail/auth.php;")
	replace(`ssl_certificate\s+\S+;`, "ssl_certificate "+filepath.Join(dir, "mail.crt")+";")
	replace(`ssl_certificate_key\s+\S+;`, "ssl_certificate_key "+filepath.Join(dir, "mail.key")+";")
	replace(`listen (\d+)`, "listen "+readmeNginxIP+":$1")
	load := ""
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_mail_module.so"); err == nil {
		load = "load_module /usr/lib/nginx/modules/ngx_mail_module.so;"
	}
	conf := fmt.Sprintf("worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n%s\nevents { worker_connections 64; }\n%s",
		dir, dir, load, snippet)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	nginx := exec.Command("nginx", "-c", confPath, "-p", dir, "-g", "daemon off;")
	if out, err := exec.Command("nginx", "-t", "-c", confPath, "-p", dir).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t on the README's block: %v\n%s", err, out)
	}
	if err := nginx.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nginx.Process.Signal(os.Interrupt)
		nginx.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error log:\n%s", lastLines(string(b), 20))
		}
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CA.CertPEM)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: readmeNginxIP}
	alice := e.Password("mailhost01", "alice")
	bob := e.Password("mailhost02", "bob")
	addr := func(port int) string { return net.JoinHostPort(readmeNginxIP, fmt.Sprint(port)) }
	for imapGreeting(ctx, addr(143)) != nil {
		select {
		case <-ctx.Done():
			t.Fatal("the README's nginx never greeted on 143")
		case <-time.After(100 * time.Millisecond):
		}
	}

	for _, tc := range []struct {
		name   string
		port   int
		tls    bool // implicit TLS, else STARTTLS
		script []mailStep
	}{
		{"IMAP STARTTLS", 143, false, []mailStep{
			{"", "* OK"}, {"a STARTTLS", "a OK"}, {"TLS", ""}, {"b LOGIN alice " + imapQuote(alice), "b OK"}, {"c LOGOUT", "* BYE"}}},
		{"IMAPS", 993, true, []mailStep{
			{"", "* OK"}, {"b LOGIN alice " + imapQuote(alice), "b OK"}, {"c LOGOUT", "* BYE"}}},
		{"POP3 STLS", 110, false, []mailStep{
			{"", "+OK"}, {"STLS", "+OK"}, {"TLS", ""}, {"USER bob", "+OK"}, {"PASS " + bob, "+OK"}, {"QUIT", "+OK"}}},
		{"POP3S", 995, true, []mailStep{
			{"", "+OK"}, {"USER bob", "+OK"}, {"PASS " + bob, "+OK"}, {"QUIT", "+OK"}}},
		// The table's row: with smtp_auth login plain nginx itself refuses
		// mail without AUTH, before asking imapgate.
		{"submission without AUTH", 587, false, []mailStep{
			{"", "220"}, {"EHLO client.test", "250 "}, {"MAIL FROM:<bob@example.test>", "530 5.7.1 Authentication required"}}},
		{"SMTPS without AUTH", 465, true, []mailStep{
			{"", "220"}, {"EHLO client.test", "250 "}, {"MAIL FROM:<bob@example.test>", "530 5.7.1 Authentication required"}}},
	} {
		if err := runMailScript(ctx, addr(tc.port), tc.tls, tlsConfig, tc.script); err != nil {
			t.Errorf("%s on the README's nginx: %v", tc.name, err)
		}
	}
}

// mailStep sends a line ("" sends nothing; "TLS" starts TLS) and reads
// lines until one starts with want (a multi-line SMTP reply ends with a
// "NNN " line).
type mailStep struct{ send, want string }

func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// runMailScript dials addr (with implicit TLS when implicit) and plays the
// script.
func runMailScript(ctx context.Context, addr string, implicit bool, cfg *tls.Config, script []mailStep) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.30.4")}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if implicit {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		conn = tc
	}
	r := bufio.NewReader(conn)
	for _, st := range script {
		switch st.send {
		case "":
		case "TLS":
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("STARTTLS handshake: %w", err)
			}
			conn, r = tc, bufio.NewReader(tc)
			continue
		default:
			if _, err := fmt.Fprintf(conn, "%s\r\n", st.send); err != nil {
				return err
			}
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("after %q: %w", redactPass(st.send), err)
			}
			if strings.HasPrefix(line, st.want) {
				break
			}
			if !strings.HasPrefix(line, "* ") && !(len(line) > 3 && line[3] == '-') {
				return fmt.Errorf("after %q: got %q, want %q", redactPass(st.send), strings.TrimSpace(line), st.want)
			}
		}
	}
	return nil
}

// redactPass keeps passwords out of failure messages.
func redactPass(cmd string) string {
	if strings.HasPrefix(cmd, "PASS ") || strings.Contains(cmd, " LOGIN ") {
		return strings.SplitN(cmd, " ", 2)[0] + " …"
	}
	return cmd
}
