package auth

import (
	"bufio"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/imapgate/imapgate/auth/http1"

	"github.com/imapgate/imapgate/imapcheck"
)

func TestUnescape(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "plain", want: "plain"},
		{in: "a+b", want: "a+b"}, // '+' is not a space: nginx never escapes it
		{in: "with%20space", want: "with space"},
		{in: "100%25", want: "100%"},
		{in: `quote"d`, want: `quote"d`},
		{in: "pässwörd", want: "pässwörd"}, // UTF-8 arrives raw
		{in: "%0d%0A", want: "\r\n"},
		{in: "%e9", want: "\xe9"},
		{in: "", want: ""},
		{in: "%", wantErr: true},
		{in: "ab%2", wantErr: true},
		{in: "%zz", wantErr: true},
		{in: "%%41", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Unescape(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("Unescape(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Unescape(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// nginxHeader builds the headers nginx sends for a plain login.
func nginxHeader(kv ...string) http.Header {
	h := http.Header{}
	h.Set("Auth-Method", "plain")
	h.Set("Auth-User", "alice")
	h.Set("Auth-Pass", "secret")
	h.Set("Auth-Protocol", "imap")
	h.Set("Auth-Login-Attempt", "1")
	h.Set("Client-IP", "192.0.2.7")
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<absent>" {
			h.Del(kv[i])
			continue
		}
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// parseHeader sends h, as nginx would, through the production head reader
// and decodes it as an auth_http request.
func parseHeader(t *testing.T, h http.Header) (Request, error) {
	t.Helper()
	head, err := http1.ReadRequest(bufio.NewReader(strings.NewReader(rawRequest(h))), 16<<10, RequestFields)
	if err != nil {
		t.Fatalf("head of %v: %v", h, err)
	}
	return parseRequest(head.Header)
}

func TestParseRequest(t *testing.T) {
	req, err := parseHeader(t, nginxHeader("Auth-Pass", "p%20a+s%25s", "Auth-Login-Attempt", "3", "Client-IP", "::ffff:192.0.2.9"))
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	want := Request{Method: MethodPlain, User: "alice", Password: "p a+s%s", Protocol: imapcheck.IMAP,
		Attempt: 3, ClientIP: netip.MustParseAddr("192.0.2.9")}
	if req != want {
		t.Errorf("ParseRequest = %+v, want %+v", req, want)
	}

	// nginx sends no Auth-Login-Attempt or Client-IP in no case we know
	// of, but a missing one is harmless.
	req, err = parseHeader(t, nginxHeader("Auth-Login-Attempt", "<absent>", "Client-IP", "<absent>"))
	if err != nil || req.Attempt != 1 || req.ClientIP.IsValid() {
		t.Errorf("ParseRequest without attempt and IP = %+v, %v", req, err)
	}
}

func TestParseRequestMalformed(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want string // in the error
	}{
		{"no method", nginxHeader("Auth-Method", "<absent>"), "missing Auth-Method"},
		{"unknown method", nginxHeader("Auth-Method", "kerberos"), "unknown Auth-Method"},
		{"no protocol", nginxHeader("Auth-Protocol", "<absent>"), "missing Auth-Protocol"},
		{"unknown protocol", nginxHeader("Auth-Protocol", "nntp"), "unknown Auth-Protocol"},
		{"bad user escape", nginxHeader("Auth-User", "al%ice"), "Auth-User"},
		{"bad pass escape", nginxHeader("Auth-Pass", "hunter%2"), "Auth-Pass"},
		{"long user", nginxHeader("Auth-User", strings.Repeat("u", maxUserBytes+1)), "Auth-User longer"},
		{"long pass", nginxHeader("Auth-Pass", strings.Repeat("p", maxPasswordBytes+1)), "Auth-Pass longer"},
		{"bad attempt", nginxHeader("Auth-Login-Attempt", "one"), "Auth-Login-Attempt"},
		{"zero attempt", nginxHeader("Auth-Login-Attempt", "0"), "Auth-Login-Attempt"},
		{"bad client ip", nginxHeader("Client-IP", "not-an-ip"), "Client-IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHeader(t, tt.h)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseRequest error = %v, want ErrMalformed mentioning %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter") {
				t.Errorf("error %q quotes the password", err)
			}
		})
	}

	dup := nginxHeader()
	dup.Add("Auth-User", "mallory")
	if _, err := parseHeader(t, dup); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "Auth-User sent 2 times") {
		t.Errorf("duplicate Auth-User: error = %v", err)
	}
}
