package auth

import (
	"bufio"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// FuzzUnescape checks nginx's %XX decoding: it never panics, it inverts
// nginx's escaping, and an error never quotes the input.
func FuzzUnescape(f *testing.F) {
	for _, seed := range []string{"", "a+b", "%20%25", "%", "%2", "%zz", "pässwörd", "%00%0d%0a", "100%25+%2B"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Unescape(s)
		if err != nil {
			if len(s) > 4 && strings.Contains(err.Error(), s) {
				t.Errorf("error %q quotes the input", err)
			}
			return
		}
		if !strings.Contains(s, "%") && got != s {
			t.Errorf("Unescape(%q) = %q, changed a string without escapes", s, got)
		}
		// Escaping the result the way nginx does and decoding again
		// gives the result back.
		if again, err := Unescape(nginxEscape(got)); err != nil || again != got {
			t.Errorf("round trip of %q: %q, %v", got, again, err)
		}
	})
}

// nginxEscape is nginx's mail_auth escaping: control bytes, space and
// '%' as %XX, everything else raw.
func nginxEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c == '%' {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// FuzzHandler sends arbitrary header values, as a request head, through
// the production server and the whole handler: it always answers with an
// Auth-Status, never panics, and never answers OK to a malformed request.
func FuzzHandler(f *testing.F) {
	f.Add("plain", "alice", "secret", "imap", "1", "192.0.2.1")
	f.Add("none", "", "", "smtp", "1", "192.0.2.1")
	f.Add("cram-md5", "a%20b", "%zz", "pop3", "0", "::1")
	f.Add("PLAIN", "zoe", "p%25", "IMAP", "99999999999999999999", "garbage")
	f.Fuzz(func(t *testing.T, method, user, pass, proto, attempt, ip string) {
		h := &Handler{Routes: fuzzRoutes(t), Verifier: &fakeVerifier{outcome: imapcheck.OK}, Resolver: fakeResolver{}, Logger: discard}
		header := http.Header{}
		for name, v := range map[string]string{"Auth-Method": method, "Auth-User": user, "Auth-Pass": pass,
			"Auth-Protocol": proto, "Auth-Login-Attempt": attempt, "Client-IP": ip} {
			header[name] = []string{v}
		}
		checkAnswer(t, rawRequest(header), rawRoundTrip(t, h, rawRequest(header)))
	})
}

// FuzzRawRequest sends arbitrary bytes to the production server and the
// whole handler, starting from requests nginx really sent (the corpus in
// testdata/fuzz/FuzzRawRequest, recorded by the integration suite).
func FuzzRawRequest(f *testing.F) {
	f.Add([]byte(nginxRequest()))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := &Handler{Routes: fuzzRoutes(t), Verifier: &fakeVerifier{outcome: imapcheck.OK}, Resolver: fakeResolver{}, Logger: discard}
		checkAnswer(t, string(raw), rawRoundTrip(t, h, string(raw)))
	})
}

// checkAnswer checks what imapgate answered to raw: nothing (the head
// never ended), or a response with an Auth-Status that is OK only when
// the request parses as a login, and never WAIT.
func checkAnswer(t *testing.T, raw, out string) {
	t.Helper()
	if out == "" {
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("unreadable answer %q to %q: %v", out, raw, err)
	}
	status := resp.Header.Get("Auth-Status")
	if status == "" && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("no Auth-Status in %q for %q", out, raw)
	}
	if status == StatusOK {
		head, err := http1.ReadRequest(bufio.NewReader(strings.NewReader(raw)), 16<<10, RequestFields)
		if err != nil {
			t.Fatalf("OK for a head that does not parse: %q", raw)
		}
		if _, err := parseRequest(head.Header); err != nil {
			t.Fatalf("OK for a malformed request %q: %v", raw, err)
		}
	}
	if status == "WAIT" {
		t.Errorf("WAIT answered")
	}
}

var discard = slog.New(slog.DiscardHandler)

// fuzzRoutes sends every user to one backend.
func fuzzRoutes(t *testing.T) backend.Chain {
	return backend.Chain{{Name: backend.RuleDefault, Selector: backend.Static{Backend: testBackends(t)["mailhost01"]}}}
}
