package http1

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

// nginxHead is a request head as nginx's auth_http sends it.
const nginxHead = "GET /mail/auth.php HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n" +
	"Auth-User: alice\r\nAuth-Pass: p%20a+ss%25\r\nAuth-Protocol: imap\r\n" +
	"Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\n\r\n"

var keep = []string{"Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol", "Auth-Login-Attempt", "Client-IP"}

func read(raw string, maxBytes int) (*Request, error) {
	return ReadRequest(bufio.NewReaderSize(strings.NewReader(raw), 4096), maxBytes, keep)
}

func TestReadRequest(t *testing.T) {
	req, err := read(nginxHead, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "GET" || req.Target != "/mail/auth.php" || req.HTTP11 {
		t.Errorf("request line read as %q %q HTTP/1.1=%v", req.Method, req.Target, req.HTTP11)
	}
	if len(req.Header) != len(keep) {
		t.Errorf("kept %d fields, want %d (Host dropped): %v", len(req.Header), len(keep), req.Header)
	}
	for name, want := range map[string]string{"auth-pass": "p%20a+ss%25", "AUTH-USER": "alice", "Client-IP": "192.0.2.7", "Host": ""} {
		if got, _ := req.Header.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
	}
	// Fields are kept under the name keep gives, whatever case was sent.
	req, err = read(strings.Replace(nginxHead, "Auth-User", "aUTH-uSER", 1), 16<<10)
	if err != nil || req.Header[1].Name != "Auth-User" {
		t.Errorf("field kept as %+v, %v", req.Header, err)
	}
	// Two values are both counted, the first returned.
	req, _ = read(strings.Replace(nginxHead, "\r\n\r\n", "\r\nAuth-User: mallory\r\n\r\n", 1), 16<<10)
	if v, n := req.Header.Get("Auth-User"); v != "alice" || n != 2 {
		t.Errorf("Get of a repeated field = %q, %d", v, n)
	}
}

func TestReadRequestMalformed(t *testing.T) {
	long := strings.Replace(nginxHead, "\r\n\r\n", "\r\nX-Big: "+strings.Repeat("x", 3000)+"\r\n\r\n", 1)
	for _, tt := range []struct {
		name, raw string
		want      error // nil: errBadHead
	}{
		{"garbage request line", "GARBAGE\r\n\r\n", nil},
		{"no target", "GET  HTTP/1.0\r\n\r\n", nil},
		{"bad method", "G(T / HTTP/1.0\r\n\r\n", nil},
		{"unknown protocol version", "GET / HTTP/2.0\r\n\r\n", nil},
		{"header without colon", strings.Replace(nginxHead, "\r\n\r\n", "\r\nBroken header\r\n\r\n", 1), nil},
		{"obsolete line folding", strings.Replace(nginxHead, "\r\n\r\n", "\r\nX-Folded: a\r\n continued\r\n\r\n", 1), nil},
		{"bad field name", strings.Replace(nginxHead, "\r\n\r\n", "\r\nBad Name: x\r\n\r\n", 1), nil},
		{"head too large", long, ErrHeadTooLarge},
		{"line longer than the buffer", strings.Replace(long, "3000", "5000", 1), ErrHeadTooLarge},
		{"empty", "", io.EOF},
		{"cut short", nginxHead[:40], io.ErrUnexpectedEOF},
		{"cut in the request line", "GET /mail", io.ErrUnexpectedEOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := read(tt.raw, 2048)
			want := tt.want
			if want == nil {
				want = errBadHead
			}
			if !errors.Is(err, want) {
				t.Errorf("error %v, want %v", err, want)
			}
		})
	}
}

func TestReadRequestLineEnds(t *testing.T) {
	req, err := read(strings.ReplaceAll(nginxHead, "\r\n", "\n"), 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := req.Header.Get("Auth-Pass"); v != "p%20a+ss%25" {
		t.Errorf("bare LF: Auth-Pass %q", v)
	}
}

// FuzzReadRequest feeds raw bytes to the production head reader, from
// the request heads nginx really sent (testdata/fuzz/FuzzReadRequest,
// recorded by the integration suite's TestNginxRequestCorpus): it never
// panics, never reads past maxBytes, and what it keeps is what was sent.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(nginxHead))
	f.Fuzz(func(t *testing.T, raw []byte) {
		const maxBytes = 2048
		req, err := ReadRequest(bufio.NewReaderSize(strings.NewReader(string(raw)), 4096), maxBytes, nil)
		if err != nil {
			return
		}
		if len(raw) > 0 && req.Method == "" {
			t.Fatalf("no method read from %q", raw)
		}
		n := len(req.Method) + len(req.Target)
		for _, f := range req.Header {
			if !strings.Contains(string(raw), f.Name) {
				t.Fatalf("kept field %q that %q does not hold", f.Name, raw)
			}
			n += len(f.Name) + len(f.Value)
		}
		if n > maxBytes {
			t.Fatalf("kept %d bytes from a head of at most %d", n, maxBytes)
		}
	})
}
