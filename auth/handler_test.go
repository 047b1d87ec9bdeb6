package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// fakeVerifier answers every check with outcome and err, and records the
// requests it was given.
type fakeVerifier struct {
	outcome imapcheck.Outcome
	err     error

	mu    sync.Mutex
	calls []imapcheck.Request
}

func (f *fakeVerifier) Verify(ctx context.Context, req imapcheck.Request) (imapcheck.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	return f.outcome, f.err
}

// fakeResolver maps names to addresses; IP literals resolve to themselves.
type fakeResolver map[string]string

func (f fakeResolver) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	if ip, ok := f[host]; ok {
		return netip.MustParseAddr(ip), nil
	}
	return netip.Addr{}, fmt.Errorf("lookup %s: no such host", host)
}

func testBackends(t *testing.T) map[string]*backend.Backend {
	t.Helper()
	backends, err := backend.ParseBackendsWith(
		"mailhost01=192.0.2.22;mailhost02=2001:db8::33;named=mail.example;cyrus=imap://192.0.2.44:9143,pop3://192.0.2.44:9110",
		backend.Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	return backends
}

// newTestHandler returns a handler with the PHP seed's rules: users
// starting with a, c, f or g on mailhost01, "nina" on the named host,
// "cy" on the imap/pop3-only backend, nobody else.
func newTestHandler(t *testing.T, v *fakeVerifier, log *bytes.Buffer) *Handler {
	t.Helper()
	backends := testBackends(t)
	fl, err := backend.ParseFirstLetter("acfg=mailhost01;n=named;y=cyrus;z=mailhost02", backends)
	if err != nil {
		t.Fatal(err)
	}
	return &Handler{
		Routes:   backend.Chain{{Name: backend.RuleFirstLetter, Selector: fl}},
		Verifier: v,
		Resolver: fakeResolver{"mail.example": "198.51.100.5"},
		Logger:   slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// answered is a response as the tests look at it.
type answered struct {
	Code   int
	header http.Header
}

func (a answered) Header() http.Header { return a.header }

// serve sends header to h, as nginx would, through the production HTTP
// server and request parser.
func serve(t testing.TB, h *Handler, header http.Header) answered {
	t.Helper()
	resp := roundTrip(t, h, rawRequest(header))
	return answered{resp.StatusCode, resp.Header}
}

// client is the Client-IP nginxHeader sends.
var client = netip.MustParseAddr("192.0.2.7")

func TestHandlerOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		header   http.Header
		outcome  imapcheck.Outcome
		err      error
		want     map[string]string // response headers; "" = must be absent
		wantCode int
		checked  *imapcheck.Request // the one check the verifier must see
		noCheck  bool               // the backend must not be asked at all
	}{
		{
			name:    "imap ok",
			header:  nginxHeader(),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "192.0.2.22", "Auth-Port": "143", "Auth-Wait": ""},
			checked: &imapcheck.Request{Protocol: imapcheck.IMAP, Address: "192.0.2.22:143", ServerName: "192.0.2.22", User: "alice", Password: "secret", ClientIP: client},
		},
		{
			name:    "pop3 ok, escaped password decoded",
			header:  nginxHeader("Auth-Protocol", "pop3", "Auth-Pass", "a+b%20c%25"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "192.0.2.22", "Auth-Port": "110"},
			checked: &imapcheck.Request{Protocol: imapcheck.POP3, Address: "192.0.2.22:110", ServerName: "192.0.2.22", User: "alice", Password: "a+b c%", ClientIP: client},
		},
		{
			name:    "smtp checked over imap, sent to smtp port",
			header:  nginxHeader("Auth-Protocol", "smtp"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "192.0.2.22", "Auth-Port": "25", "Auth-Error-Code": ""},
			checked: &imapcheck.Request{Protocol: imapcheck.IMAP, Address: "192.0.2.22:143", ServerName: "192.0.2.22", User: "alice", Password: "secret", ClientIP: client},
		},
		{
			name:    "ipv6 backend is bare",
			header:  nginxHeader("Auth-User", "zoe"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "2001:db8::33", "Auth-Port": "143"},
		},
		{
			name:    "host name resolved to a literal IP",
			header:  nginxHeader("Auth-User", "nina"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "198.51.100.5", "Auth-Port": "143"},
			checked: &imapcheck.Request{Protocol: imapcheck.IMAP, Address: "mail.example:143", ServerName: "mail.example", User: "nina", Password: "secret", ClientIP: client},
		},
		{
			name:    "per-protocol ports",
			header:  nginxHeader("Auth-User", "yann", "Auth-Protocol", "pop3"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": "OK", "Auth-Server": "192.0.2.44", "Auth-Port": "9110"},
		},
		{
			name:    "wrong password",
			header:  nginxHeader(),
			outcome: imapcheck.Rejected,
			err:     errors.New("NO [AUTHENTICATIONFAILED] Authentication failed."),
			want:    map[string]string{"Auth-Status": imapInvalid, "Auth-Wait": "2", "Auth-Server": "", "Auth-Error-Code": ""},
		},
		{
			name:    "wrong password, smtp",
			header:  nginxHeader("Auth-Protocol", "smtp"),
			outcome: imapcheck.Rejected,
			want:    map[string]string{"Auth-Status": StatusInvalid, "Auth-Error-Code": "535 5.7.8"},
		},
		{
			name:    "wait grows, then stops so nginx closes the session",
			header:  nginxHeader("Auth-Login-Attempt", "4"),
			outcome: imapcheck.Rejected,
			want:    map[string]string{"Auth-Status": imapInvalid, "Auth-Wait": "8"},
		},
		{
			name:    "no wait after ten attempts",
			header:  nginxHeader("Auth-Login-Attempt", "10"),
			outcome: imapcheck.Rejected,
			want:    map[string]string{"Auth-Status": imapInvalid, "Auth-Wait": ""},
		},
		{
			name:    "unknown user looks like a wrong password, backend not asked",
			noCheck: true,
			header:  nginxHeader("Auth-User", "bob"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": imapInvalid, "Auth-Wait": "2"},
		},
		{
			name:    "empty password not sent to the backend",
			noCheck: true,
			header:  nginxHeader("Auth-Pass", ""),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": imapInvalid},
		},
		{
			name:    "backend down is temporary",
			header:  nginxHeader(),
			outcome: imapcheck.Temporary,
			err:     errors.New("dial tcp 192.0.2.22:143: connect: connection refused"),
			want:    map[string]string{"Auth-Status": imapTemporary, "Auth-Wait": "3", "Auth-Server": ""},
		},
		{
			name:    "backend down, smtp",
			header:  nginxHeader("Auth-Protocol", "smtp"),
			outcome: imapcheck.Temporary,
			want:    map[string]string{"Auth-Status": StatusTemporary, "Auth-Error-Code": "451 4.3.0"},
		},
		{
			name:    "check unsupported is not a wrong password",
			header:  nginxHeader(),
			outcome: imapcheck.Unsupported,
			want:    map[string]string{"Auth-Status": imapTemporary},
		},
		{
			name:    "backend without smtp",
			noCheck: true,
			header:  nginxHeader("Auth-User", "yann", "Auth-Protocol", "smtp"),
			outcome: imapcheck.OK,
			want:    map[string]string{"Auth-Status": StatusTemporary, "Auth-Error-Code": "451 4.3.0"},
		},
		{
			name:    "apop cannot be verified",
			noCheck: true,
			header:  nginxHeader("Auth-Method", "apop", "Auth-Protocol", "pop3", "Auth-Salt", "<1.2@x>"),
			want:    map[string]string{"Auth-Status": StatusMethod, "Auth-Wait": ""},
		},
		{
			name:    "cram-md5 cannot be verified",
			noCheck: true,
			header:  nginxHeader("Auth-Method", "cram-md5"),
			want:    map[string]string{"Auth-Status": StatusMethod},
		},
		{
			name:    "cram-md5 over smtp",
			noCheck: true,
			header:  nginxHeader("Auth-Method", "cram-md5", "Auth-Protocol", "smtp"),
			want:    map[string]string{"Auth-Status": StatusMethod, "Auth-Error-Code": "504 5.5.4"},
		},
		{
			name:    "external cannot be verified",
			noCheck: true,
			header:  nginxHeader("Auth-Method", "external"),
			want:    map[string]string{"Auth-Status": StatusMethod},
		},
		{
			name:    "unauthenticated smtp refused without a relay",
			noCheck: true,
			header:  nginxHeader("Auth-Method", "none", "Auth-Protocol", "smtp", "Auth-User", "", "Auth-Pass", ""),
			want:    map[string]string{"Auth-Status": StatusAuthRequired, "Auth-Error-Code": "530 5.7.0", "Auth-Server": ""},
		},
		{
			name:     "method none for imap is malformed",
			noCheck:  true,
			header:   nginxHeader("Auth-Method", "none"),
			want:     map[string]string{"Auth-Status": StatusMalformed},
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "garbled request answered, not crashed",
			noCheck:  true,
			header:   nginxHeader("Auth-Pass", "%zz"),
			want:     map[string]string{"Auth-Status": StatusMalformed, "Auth-Wait": ""},
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "missing headers answered",
			noCheck:  true,
			header:   http.Header{},
			want:     map[string]string{"Auth-Status": StatusMalformed},
			wantCode: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &fakeVerifier{outcome: tt.outcome, err: tt.err}
			var log bytes.Buffer
			h := newTestHandler(t, v, &log)
			w := serve(t, h, tt.header)
			wantCode := tt.wantCode
			if wantCode == 0 {
				wantCode = http.StatusOK
			}
			if w.Code != wantCode {
				t.Errorf("status code %d, want %d", w.Code, wantCode)
			}
			for name, want := range tt.want {
				if got := w.Header().Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if tt.checked != nil {
				if len(v.calls) != 1 || v.calls[0] != *tt.checked {
					t.Errorf("verifier saw %+v, want one %+v", v.calls, *tt.checked)
				}
			}
			if tt.noCheck && len(v.calls) > 0 {
				t.Errorf("verifier called for a request that needs no check: %+v", v.calls)
			}
			if n := strings.Count(log.String(), "msg=login"); n != 1 {
				t.Errorf("%d log lines for one attempt:\n%s", n, log.String())
			}
			if pass := tt.header.Get("Auth-Pass"); len(pass) > 3 && strings.Contains(log.String(), pass) {
				t.Errorf("log contains the password:\n%s", log.String())
			}
		})
	}
}

func TestHandlerRelay(t *testing.T) {
	v := &fakeVerifier{}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.SMTPRelay = testBackends(t)["mailhost02"]
	w := serve(t, h, nginxHeader("Auth-Method", "none", "Auth-Protocol", "smtp", "Auth-User", "", "Auth-Pass", ""))
	if got := w.Header(); got.Get("Auth-Status") != "OK" || got.Get("Auth-Server") != "2001:db8::33" || got.Get("Auth-Port") != "25" {
		t.Errorf("relay answer %v", got)
	}
	if len(v.calls) != 0 {
		t.Errorf("unauthenticated SMTP was verified: %+v", v.calls)
	}
}

func TestHandlerSMTPVerifiedWithPOP3(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.SMTPVerify = imapcheck.POP3
	w := serve(t, h, nginxHeader("Auth-Protocol", "smtp"))
	if w.Header().Get("Auth-Port") != "25" || len(v.calls) != 1 || v.calls[0].Protocol != imapcheck.POP3 || v.calls[0].Address != "192.0.2.22:110" {
		t.Errorf("answer %v after checks %+v", w.Header(), v.calls)
	}
}

func TestHandlerSharedSecret(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.SharedSecret = "s3cr3t value"

	w := serve(t, h, nginxHeader())
	if w.Code != http.StatusForbidden || w.Header().Get("Auth-Status") != "" || len(v.calls) != 0 {
		t.Errorf("without the secret: %d %v, %d checks", w.Code, w.Header(), len(v.calls))
	}
	w = serve(t, h, nginxHeader("X-Imapgate-Secret", "s3cr3t valu"))
	if w.Code != http.StatusForbidden {
		t.Errorf("with a wrong secret: %d", w.Code)
	}
	w = serve(t, h, nginxHeader("X-Imapgate-Secret", "s3cr3t value"))
	if w.Code != http.StatusOK || w.Header().Get("Auth-Status") != "OK" {
		t.Errorf("with the secret: %d %v", w.Code, w.Header())
	}
}

func TestHandlerCertificateErrorIsLoud(t *testing.T) {
	// imapcheck says what the error is; the handler only listens.
	certErr := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	v := &fakeVerifier{outcome: imapcheck.Temporary, err: fmt.Errorf("%w: %w", imapcheck.ErrUntrustedCertificate, certErr)}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	w := serve(t, h, nginxHeader())
	if w.Header().Get("Auth-Status") != imapTemporary {
		t.Errorf("Auth-Status = %q", w.Header().Get("Auth-Status"))
	}
	if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "certificate not trusted") {
		t.Errorf("log does not shout about the certificate:\n%s", log.String())
	}
}

// TestResponseFitsNginxBuffer checks the whole response head, as the HTTP
// server writes it, against nginx's 1024-byte limit, for the longest
// answers imapgate gives.
func TestResponseFitsNginxBuffer(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.Temporary}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	for _, header := range []http.Header{
		nginxHeader("Auth-Protocol", "smtp"),
		nginxHeader("Auth-Method", "cram-md5", "Auth-Protocol", "smtp"),
		nginxHeader("Auth-User", "zoe"),
	} {
		raw := rawRoundTrip(t, h, rawRequest(header))
		if n := len(raw); n > 512 {
			t.Errorf("response head is %d bytes, want well under 1024:\n%s", n, raw)
		}
		resp := parseResponse(t, raw)
		for name := range resp.Header {
			for _, c := range name {
				if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
					t.Errorf("header name %q has a byte nginx refuses", name)
				}
			}
		}
		if resp.Header.Get("Auth-Status") == "WAIT" {
			t.Errorf("imapgate never answers WAIT")
		}
	}
}

func TestHandlerAllowFrom(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.AllowFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	// roundTrip's requests come from testPeer, 192.0.2.1.
	if w := serve(t, h, nginxHeader()); w.Code != http.StatusForbidden || len(v.calls) != 0 {
		t.Errorf("peer outside IMAPGATE_ALLOW_FROM: %d, %d checks", w.Code, len(v.calls))
	}
	h.AllowFrom = append(h.AllowFrom, netip.MustParsePrefix("192.0.2.0/24"))
	if w := serve(t, h, nginxHeader()); w.Code != http.StatusOK || w.Header().Get("Auth-Status") != "OK" {
		t.Errorf("peer inside IMAPGATE_ALLOW_FROM: %d %v", w.Code, w.Header())
	}
}

func TestHandlerUncarriableCredentials(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	for _, hdr := range []http.Header{
		nginxHeader("Auth-Protocol", "pop3", "Auth-Pass", "pass%0D%0AQUIT"),
		nginxHeader("Auth-Pass", "nul%00byte"),
	} {
		w := serve(t, h, hdr)
		if got := w.Header().Get("Auth-Status"); !strings.HasSuffix(got, "] "+StatusInvalid) {
			t.Errorf("Auth-Status %q for %v", got, hdr)
		}
	}
	if len(v.calls) != 0 {
		t.Errorf("the backend was asked: %+v", v.calls)
	}
	if strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("a client's bytes were logged as an operator's problem:\n%s", log.String())
	}
	// CR and LF go to an IMAP server as a literal.
	serve(t, h, nginxHeader("Auth-Pass", "line%0D%0Abreak"))
	if len(v.calls) != 1 {
		t.Errorf("IMAP password with CR LF was not checked")
	}
}
