package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/http1"
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

const (
	testToken = "oncall:0123456789abcdef-secret"
	// otherToken is a valid-looking token the server does not accept.
	otherToken = "oncall:0123456789abcdef-wrong!"
)

// passwords is the fake backend: a user's right password is "right-USER".
type passwords struct{}

func (passwords) Verify(_ context.Context, req imapcheck.Request) (imapcheck.Outcome, error) {
	if req.Password == "right-"+req.User {
		return imapcheck.OK, nil
	}
	return imapcheck.Rejected, nil
}

// syncBuffer is a log both the servers and the test use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is a login handler (amy on mailhost01, the others on
// mailhost02; a pair blocked after 2 wrong passwords) behind nginx's side
// (auth) and the admin API in front of the same state (api).
type fixture struct {
	store    *state.Memory
	controls *state.LocalControls
	handler  *auth.Handler
	log      *syncBuffer
	auth     *httptest.Server
	api      *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	backends, err := backend.ParseBackendsWith("mailhost01=192.0.2.1;mailhost02=192.0.2.2", backend.Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	fl, _ := backend.ParseFirstLetter("a=mailhost01", backends)
	limits := auth.Limits{Limits: state.Limits{PerPair: 2, PerUser: 10, PerNetwork: 20, Window: time.Hour, Remember: time.Hour, MaxTracked: 100}}
	f := &fixture{store: state.NewMemory(limits.Limits), controls: &state.LocalControls{}, log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(f.log, nil))
	f.handler = &auth.Handler{
		Routes:   backend.Chain{{Name: backend.RuleFirstLetter, Selector: fl}, {Name: backend.RuleDefault, Selector: backend.Static{Backend: backends["mailhost02"]}}},
		Verifier: passwords{}, Resolver: &backend.Resolver{}, CacheTTL: time.Hour, Limits: &limits,
		State: f.store, Controls: f.controls, Backends: backends, Logger: logger,
	}
	tokens, err := ParseTokens(testToken + ",ci:abcdefghijklmnop-ci")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Tokens: tokens, Store: f.store, Controls: f.controls, Logins: f.handler,
		Backends: []string{"mailhost01", "mailhost02"}, Logger: logger}
	f.auth = httptest.NewServer(http1.NetHTTP(f.handler, auth.RequestFields))
	f.api = httptest.NewServer(srv.Handler())
	t.Cleanup(func() { f.auth.Close(); f.api.Close(); http.DefaultClient.CloseIdleConnections() })
	return f
}

// login asks the handler as nginx would and returns Auth-Status (and
// Auth-Wait after a space, when there is one).
func (f *fixture) login(t *testing.T, user, pass, client string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.auth.URL+"/mail/auth.php", nil)
	for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": user, "Auth-Pass": pass,
		"Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "Client-IP": client} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	status := resp.Header.Get("Auth-Status")
	if w := resp.Header.Get("Auth-Wait"); w != "" {
		status += " " + w
	}
	return status
}

// call sends one API request with token ("" for none) and returns the
// status code and the body.
func (f *fixture) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.api.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// block makes amy's pair from 198.51.100.0/24 blocked.
func (f *fixture) block(t *testing.T) {
	t.Helper()
	for _, pass := range []string{"guess-1", "guess-2"} {
		f.login(t, "amy", pass, "198.51.100.7")
	}
	if got := f.login(t, "amy", "right-amy", "198.51.100.8"); !strings.Contains(got, "Too many") {
		t.Fatalf("amy from the attacked network after 2 guesses: %q, want throttled", got)
	}
}

// auditLines returns the admin audit lines logged.
func (f *fixture) auditLines() []string {
	var out []string
	for _, l := range strings.Split(f.log.String(), "\n") {
		if strings.Contains(l, "msg=admin") {
			out = append(out, l)
		}
	}
	return out
}

var allEndpoints = []struct{ method, path, body string }{
	{"GET", "/admin/v1/blocks", ""},
	{"POST", "/admin/v1/lift", `{"user":"amy"}`},
	{"GET", "/admin/v1/explain?user=amy&client=198.51.100.7", ""},
	{"POST", "/admin/v1/flush", `{"user":"amy"}`},
	{"POST", "/admin/v1/drain", `{"backend":"mailhost01"}`},
	{"POST", "/admin/v1/undrain", `{"backend":"mailhost01"}`},
	{"POST", "/admin/v1/hold", `{"user":"amy"}`},
	{"POST", "/admin/v1/unhold", `{"user":"amy"}`},
	{"GET", "/admin/v1/controls", ""},
	{"GET", "/admin/v1/nosuch", ""},
	{"DELETE", "/admin/v1/blocks", ""},
}

// No endpoint (nor an unknown path, nor a wrong method) answers anything
// but 401 without the right token, and nothing changes; each refusal is
// one audit line that holds no token.
func TestAPIRefusesWithoutToken(t *testing.T) {
	f := newFixture(t)
	f.block(t)
	for _, tok := range []string{"", otherToken, "0123456789abcdef-secret", testToken + "x", "oncall"} {
		for _, e := range allEndpoints {
			before := len(f.auditLines())
			code, body := f.call(t, e.method, e.path, tok, e.body)
			if code != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
				t.Errorf("%s %s with token %q: %d %s", e.method, e.path, tok, code, body)
			}
			if n := len(f.auditLines()) - before; n != 1 {
				t.Errorf("%s %s refused: %d audit lines, want 1", e.method, e.path, n)
			}
		}
	}
	// A scheme other than Bearer is no token either.
	req, _ := http.NewRequest("GET", f.api.URL+"/admin/v1/blocks", nil)
	req.SetBasicAuth("oncall", "0123456789abcdef-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("basic auth: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if _, ok := f.controls.Drained("mailhost01"); ok || len(f.controls.Holds()) != 0 {
		t.Error("a refused request changed the controls")
	}
	if got := f.login(t, "amy", "right-amy", "198.51.100.8"); !strings.Contains(got, "Too many") {
		t.Errorf("a refused lift lifted: %q", got)
	}
	if log := f.log.String(); strings.Contains(log, "0123456789abcdef") || !strings.Contains(log, `result="denied: invalid token"`) {
		t.Errorf("audit log holds a token, or says nothing of the refusal:\n%s", log)
	}
}

// The token check hashes what is presented and compares fixed-length
// digests with every entry: no early return on a length or a mismatch.
func TestTokensCompareDigests(t *testing.T) {
	tokens, err := ParseTokens("oncall:0123456789abcdef,0123456789ABCDEF")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		header, who string
	}{
		{"Bearer oncall:0123456789abcdef", "oncall"},
		{"Bearer 0123456789ABCDEF", defaultTokenName},
		{"Bearer 0123456789abcdef", ""},
		{"Bearer oncall:0123456789abcde", ""},
		{"Bearer ", ""},
		{"bearer oncall:0123456789abcdef", ""},
	} {
		who, err := tokens.check(tc.header)
		if who != tc.who || (tc.who == "") != (err != nil) {
			t.Errorf("check(%q) = %q, %v; want %q", tc.header, who, err, tc.who)
		}
	}
	for _, bad := range []string{"XyZ9q", "oncall:XyZ9q", "on call:XyZ9q0123456789abcdef", "a:XyZ9q0123456789abcdef,", ":XyZ9q0123456789abcdef", "a:XyZ9q 0123456789abcdef"} {
		if _, err := ParseTokens(bad); err == nil {
			t.Errorf("ParseTokens(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "XyZ9q") {
			t.Errorf("ParseTokens error %q holds the secret", err)
		}
	}
}

// decodeBody decodes an answer.
func decodeBody[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	return v
}

// blocks lists and filters; lift lifts the pair and lets the owner in at
// once; explain says why before and nothing after.
func TestAPIBlocksLiftExplain(t *testing.T) {
	f := newFixture(t)
	f.block(t)
	f.login(t, "bob", "bob-guess", "203.0.113.5")
	code, body := f.call(t, "GET", "/admin/v1/blocks?user=AMY", testToken, "")
	recs := decodeBody[RecordsReply](t, body).Records
	if code != 200 || len(recs) != 2 || recs[0].Kind != state.Pair || !recs[0].Blocked || recs[0].Network != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("blocks for amy: %d %s", code, body)
	}
	_, body = f.call(t, "GET", "/admin/v1/blocks?network=203.0.113.77", testToken, "")
	if recs := decodeBody[RecordsReply](t, body).Records; len(recs) != 2 || recs[0].User != "bob" && recs[1].User != "bob" {
		t.Errorf("blocks for 203.0.113.77's network: %s", body)
	}
	_, body = f.call(t, "GET", "/admin/v1/blocks?blocked=true", testToken, "")
	if recs := decodeBody[RecordsReply](t, body).Records; len(recs) != 1 {
		t.Errorf("blocks only: %s", body)
	}
	_, body = f.call(t, "GET", "/admin/v1/explain?user=amy&client=198.51.100.8&protocol=imap", testToken, "")
	x := decodeBody[auth.Explanation](t, body)
	if x.Limit != "pair" || x.Backend != "mailhost01" || x.Rule != "first-letter" || !strings.Contains(x.Verdict, "throttled") {
		t.Errorf("explain: %s", body)
	}
	code, body = f.call(t, "POST", "/admin/v1/lift", testToken, `{"user":"amy","network":"198.51.100.0/24"}`)
	if lifted := decodeBody[RecordsReply](t, body).Records; code != 200 || len(lifted) != 1 || lifted[0].Kind != state.Pair {
		t.Errorf("lift the pair: %d %s", code, body)
	}
	if got := f.login(t, "amy", "right-amy", "198.51.100.8"); got != "OK" {
		t.Errorf("the owner after the lift: %q", got)
	}
	_, body = f.call(t, "GET", "/admin/v1/explain?user=amy&client=198.51.100.8", testToken, "")
	if x := decodeBody[auth.Explanation](t, body); x.Limit != "" || !x.Owner || len(x.Cached) != 1 {
		t.Errorf("explain after the lift and a login: %s", body)
	}
	_, body = f.call(t, "POST", "/admin/v1/lift", testToken, `{"network":"203.0.113.0/24"}`)
	if lifted := decodeBody[RecordsReply](t, body).Records; len(lifted) != 2 {
		t.Errorf("lift bob's network: %s", body)
	}
	audit := strings.Join(f.auditLines(), "\n")
	for _, want := range []string{`who=oncall action=lift target="user=amy network=198.51.100.0/24" result="ok: 1 record lifted"`,
		`who=oncall action=blocks target="user=amy" result=ok`, `action=explain`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lines lack %s:\n%s", want, audit)
		}
	}
}

// flush makes the next login a check; drain answers "try later" (or
// sends to the alternate) until undrain; hold answers WAIT until unhold.
func TestAPIFlushDrainHold(t *testing.T) {
	f := newFixture(t)
	f.login(t, "amy", "right-amy", "192.0.2.50")
	code, body := f.call(t, "POST", "/admin/v1/flush", testToken, `{"user":"Amy"}`)
	if r := decodeBody[FlushReply](t, body); code != 200 || r.Flushed != 1 {
		t.Errorf("flush: %d %s", code, body)
	}
	code, body = f.call(t, "POST", "/admin/v1/drain", testToken, `{"backend":"mailhost01"}`)
	if r := decodeBody[ControlReply](t, body); code != 200 || len(r.Drains) != 1 || r.Drains[0].By != "oncall" {
		t.Errorf("drain: %d %s", code, body)
	}
	if got := f.login(t, "amy", "right-amy", "192.0.2.50"); got != "[UNAVAILABLE] Temporary server problem, try again later 3" {
		t.Errorf("amy on the drained backend: %q", got)
	}
	if got := f.login(t, "bob", "right-bob", "192.0.2.50"); got != "OK" {
		t.Errorf("bob on mailhost02 meanwhile: %q", got)
	}
	f.call(t, "POST", "/admin/v1/drain", "ci:abcdefghijklmnop-ci", `{"backend":"mailhost01","to":"mailhost02"}`)
	if got := f.login(t, "amy", "right-amy", "192.0.2.50"); got != "OK" {
		t.Errorf("amy drained to mailhost02: %q", got)
	}
	code, body = f.call(t, "POST", "/admin/v1/undrain", testToken, `{"backend":"mailhost01"}`)
	if r := decodeBody[ControlReply](t, body); code != 200 || !r.Changed || len(r.Drains) != 0 {
		t.Errorf("undrain: %d %s", code, body)
	}
	if _, body = f.call(t, "POST", "/admin/v1/undrain", testToken, `{"backend":"mailhost01"}`); decodeBody[ControlReply](t, body).Changed {
		t.Errorf("second undrain changed something: %s", body)
	}
	f.call(t, "POST", "/admin/v1/hold", testToken, `{"user":"bob","wait":2}`)
	if got := f.login(t, "bob", "right-bob", "192.0.2.50"); got != "WAIT 2" {
		t.Errorf("bob held: %q", got)
	}
	_, body = f.call(t, "GET", "/admin/v1/controls", testToken, "")
	if r := decodeBody[ControlsReply](t, body); len(r.Holds) != 1 || r.Holds[0].User != "bob" || r.Holds[0].Wait != 2 {
		t.Errorf("controls: %s", body)
	}
	f.call(t, "POST", "/admin/v1/unhold", testToken, `{"user":"bob"}`)
	if got := f.login(t, "bob", "right-bob", "192.0.2.50"); got != "OK" {
		t.Errorf("bob released: %q", got)
	}
	audit := strings.Join(f.auditLines(), "\n")
	for _, want := range []string{`who=ci action=drain target="backend=mailhost01 to=mailhost02" result=ok`,
		`action=flush target="user=Amy" result="ok: 1 cached login flushed"`, `action=hold target="user=bob wait=2" result=ok`,
		`action=undrain target="backend=mailhost01" result="ok: nothing to change"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lines lack %s:\n%s", want, audit)
		}
	}
}

// Input the API cannot use is a 400 with a JSON error, and changes
// nothing.
func TestAPIBadInput(t *testing.T) {
	f := newFixture(t)
	f.block(t)
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "/admin/v1/blocks?network=198.51.100.0/33", "", "network"},
		{"POST", "/admin/v1/lift", `{"network":"nonsense"}`, "network"},
		{"POST", "/admin/v1/lift", `{}`, "name a user"},
		{"POST", "/admin/v1/lift", `{"user":"amy"`, "JSON"},
		{"POST", "/admin/v1/lift", `{"user":"amy","color":"red"}`, "unknown field"},
		{"POST", "/admin/v1/lift", `{"user":"amy"} {"user":"bob"}`, "one JSON object"},
		{"GET", "/admin/v1/explain?user=amy&client=nowhere", "", "client"},
		{"GET", "/admin/v1/explain?client=192.0.2.1", "", "user"},
		{"GET", "/admin/v1/explain?user=amy&client=192.0.2.1&protocol=nntp", "", "protocol"},
		{"POST", "/admin/v1/flush", `{}`, "user"},
		{"POST", "/admin/v1/drain", `{"backend":"mailhost09"}`, "no backend named"},
		{"POST", "/admin/v1/drain", `{"backend":"mailhost01","to":"mailhost01"}`, "itself"},
		{"POST", "/admin/v1/drain", `{"backend":"mailhost01","to":"nowhere"}`, "no backend named"},
		{"POST", "/admin/v1/undrain", `{}`, "name a backend"},
		{"POST", "/admin/v1/hold", `{"user":"amy","wait":9999}`, "wait"},
		{"POST", "/admin/v1/hold", `{"wait":3}`, "user"},
		{"POST", "/admin/v1/unhold", `[]`, "JSON"},
	} {
		code, body := f.call(t, tc.method, tc.path, testToken, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(decodeBody[ErrorReply](t, body).Error, tc.want) {
			t.Errorf("%s %s %s: %d %s, want 400 about %s", tc.method, tc.path, tc.body, code, body, tc.want)
		}
	}
	if code, _ := f.call(t, "GET", "/admin/v1/lift", testToken, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET lift: %d, want 405", code)
	}
	if len(f.controls.Drains()) != 0 || len(f.controls.Holds()) != 0 {
		t.Error("bad input changed the controls")
	}
	if got := f.login(t, "amy", "right-amy", "198.51.100.8"); !strings.Contains(got, "Too many") {
		t.Errorf("bad input lifted the block: %q", got)
	}
}

// flushRecorder stands in for the replicas a flush is carried to.
type flushRecorder struct {
	users []string
	err   error
}

func (f *flushRecorder) Flush(_ context.Context, user string) error {
	f.users = append(f.users, user)
	return f.err
}

// With a shared store a flush is carried to every replica too; a store
// that cannot be reached is a warning, the local flush done.
func TestAPIFlushReplicas(t *testing.T) {
	f := newFixture(t)
	rec := &flushRecorder{}
	tokens, _ := ParseTokens(testToken)
	api := httptest.NewServer((&Server{Tokens: tokens, Store: f.store, Controls: f.controls, Logins: f.handler, Replicas: rec,
		Logger: slog.New(slog.NewTextHandler(f.log, nil))}).Handler())
	f.api.Close() // the fixture's, without replicas; the cleanup closes this one
	f.api = api
	_, body := f.call(t, "POST", "/admin/v1/flush", testToken, `{"user":"bob"}`)
	if r := decodeBody[FlushReply](t, body); !r.Replicas || r.Warning != "" || len(rec.users) != 1 || rec.users[0] != "bob" {
		t.Errorf("flush with replicas: %s, carried %v", body, rec.users)
	}
	rec.err = state.ErrLocalOnly
	_, body = f.call(t, "POST", "/admin/v1/flush", testToken, `{"user":"bob"}`)
	if r := decodeBody[FlushReply](t, body); r.Replicas || !strings.Contains(r.Warning, "this process only") {
		t.Errorf("flush with the store down: %s", body)
	}
	if !strings.Contains(f.log.String(), `result="ok: 0 cached logins flushed, every replica asked"`) {
		t.Errorf("audit lines:\n%s", strings.Join(f.auditLines(), "\n"))
	}
}
