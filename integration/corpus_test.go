package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/integration/harness"
)

// updateCorpus rewrites the fuzz corpora from what nginx sends.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite auth/http1/testdata/fuzz/FuzzReadRequest and auth/testdata/fuzz/FuzzRawRequest from the requests nginx sends")

// corpusDirs are the fuzz corpora that hold what nginx really sends.
var corpusDirs = []string{"auth/http1/testdata/fuzz/FuzzReadRequest", "auth/testdata/fuzz/FuzzRawRequest"}

// recorder is an auth_http server that keeps every request head nginx
// sends and refuses every login (the first attempt of user "again" with an
// Auth-Wait, so that nginx asks a second time).
type recorder struct {
	ln   net.Listener
	mu   sync.Mutex
	seen [][]byte
}

func (r *recorder) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.answer(c)
	}
}

func (r *recorder) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var head bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		head.Write(line)
		if err != nil || len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	r.mu.Lock()
	r.seen = append(r.seen, head.Bytes())
	r.mu.Unlock()
	wait := ""
	if bytes.Contains(head.Bytes(), []byte("Auth-User: again\r\n")) && bytes.Contains(head.Bytes(), []byte("Auth-Login-Attempt: 1\r\n")) {
		wait = "Auth-Wait: 1\r\n"
	}
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n%s\r\n", wait)
}

// TestNginxRequestCorpus drives every login nginx's mail proxy offers
// through a real nginx whose auth_http is a recorder, and checks that
// imapgate's production parser reads every request nginx sends. With
// -update-corpus it writes them as the seed corpora of the fuzz targets.
func TestNginxRequestCorpus(t *testing.T) {
	e := requireEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	const ip = "127.0.50.1"
	ln, err := net.Listen("tcp", ip+":9180")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{ln: ln}
	go rec.serve()
	defer ln.Close()
	proxy, err := e.StartMailProxyWithSecret(ctx, "corpus", ip, ln.Addr().String(), "corpus-shared-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Nginx.Stop(10 * time.Second)

	d := e.ClientDialer()
	special := "p a%ss+wörd\"\\"
	imapLogin(ctx, d, proxy.IMAPAddr, "alice", "plain-imap-login")
	imapLogin(ctx, d, proxy.IMAPAddr, "bob@example.org", special)
	imapAuthenticatePlain(ctx, t, d, proxy.IMAPAddr, "carol", "line\r\nbreak")
	imapLoginTwice(ctx, t, d, proxy.IMAPAddr, "again", "second-attempt")
	pop3Login(ctx, d, proxy.POP3Addr, "dave", "pop3-user-pass", false)
	pop3Login(ctx, d, proxy.POP3Addr, "erin", special, true)
	smtpSend(ctx, d, proxy.SMTPAddr, "frank", "smtp-auth-plain", "frank@example.org", "x@example.org", "t")

	rec.mu.Lock()
	seen := slices.Clone(rec.seen)
	rec.mu.Unlock()
	if len(seen) < 8 {
		t.Fatalf("nginx asked %d times, want at least 8 (two for \"again\")", len(seen))
	}
	for i, raw := range seen {
		head, err := http1.ReadRequest(bufio.NewReader(bytes.NewReader(raw)), 16<<10, nil)
		if err != nil {
			t.Errorf("request %d nginx sent does not parse: %v\n%q", i, err, raw)
			continue
		}
		if v, _ := head.Header.Get("X-Imapgate-Secret"); v != "corpus-shared-secret" {
			t.Errorf("request %d lacks the shared secret: %q", i, raw)
		}
	}
	if *updateCorpus {
		writeCorpus(t, seen)
	}
	checkCorpus(t)
}

// imapLoginTwice tries LOGIN twice in one session: nginx's second
// request has Auth-Login-Attempt 2.
func imapLoginTwice(ctx context.Context, t *testing.T, d *net.Dialer, addr, user, pass string) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	r.ReadString('\n')
	for _, tag := range []string{"A1", "A2"} {
		fmt.Fprintf(c, "%s LOGIN %s %s\r\n", tag, user, pass)
		r.ReadString('\n')
	}
}

// imapAuthenticatePlain logs in with AUTHENTICATE PLAIN, which sends the
// password (here with CR LF) inside base64.
func imapAuthenticatePlain(ctx context.Context, t *testing.T, d *net.Dialer, addr, user, pass string) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	r.ReadString('\n')
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	fmt.Fprintf(c, "A1 AUTHENTICATE PLAIN %s\r\n", ir)
	r.ReadString('\n')
}

// writeCorpus writes each request as a corpus file of each fuzz target.
func writeCorpus(t *testing.T, seen [][]byte) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range corpusDirs {
		dir = filepath.Join(root, dir)
		old, _ := filepath.Glob(filepath.Join(dir, "nginx-*"))
		for _, f := range old {
			os.Remove(f)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, raw := range seen {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(raw)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("nginx-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("wrote %d requests to %s", len(seen), strings.Join(corpusDirs, " and "))
}

// checkCorpus checks that the committed corpora hold nginx's requests.
func checkCorpus(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range corpusDirs {
		files, _ := filepath.Glob(filepath.Join(root, dir, "nginx-*"))
		if len(files) < 8 {
			t.Errorf("%s has %d recorded nginx requests, want 8 or more: run go test ./integration -run TestNginxRequestCorpus -update-corpus", dir, len(files))
		}
	}
}
