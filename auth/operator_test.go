package auth

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/imapcheck"
)

// newControlledHandler is newTestHandler with the operator's controls,
// a cache and limits (one wrong password blocks a pair).
func newControlledHandler(t *testing.T, v *fakeVerifier, log *bytes.Buffer) (*Handler, *state.LocalControls) {
	t.Helper()
	h := newTestHandler(t, v, log)
	c := &state.LocalControls{}
	h.Controls, h.Backends = c, testBackends(t)
	h.CacheTTL = time.Hour
	h.Limits = &Limits{Limits: state.Limits{PerPair: 1, Window: time.Minute, Remember: time.Hour, MaxTracked: 100}}
	return h, c
}

// A held user's login gets WAIT with its Auth-Wait, never a check; the
// others are not held; unheld, the login is checked again.
func TestHoldAnswersWait(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h, c := newControlledHandler(t, v, &log)
	c.SetHold(context.Background(), state.Hold{User: "Alice", Wait: 4})
	a := serve(t, h, nginxHeader("Auth-User", "ALICE"))
	if got := a.Header().Get("Auth-Status"); got != "WAIT" || a.Header().Get("Auth-Wait") != "4" {
		t.Errorf("held: Auth-Status %q, Auth-Wait %q; want WAIT, 4", got, a.Header().Get("Auth-Wait"))
	}
	if a.Header().Get("Auth-Server") != "" || len(v.calls) != 0 {
		t.Errorf("held: Auth-Server %q, %d checks; want none", a.Header().Get("Auth-Server"), len(v.calls))
	}
	if !strings.Contains(log.String(), "outcome=held") || !strings.Contains(log.String(), `reason="user held by the operator"`) {
		t.Errorf("log: %s", log.String())
	}
	if a := serve(t, h, nginxHeader("Auth-User", "carol")); a.Header().Get("Auth-Status") != "OK" {
		t.Errorf("carol, not held: %v", a.Header())
	}
	c.Unhold(context.Background(), "alice")
	if a := serve(t, h, nginxHeader()); a.Header().Get("Auth-Status") != "OK" {
		t.Errorf("alice unheld: %v", a.Header())
	}
	// A hold without a wait still sends one: nginx would ask again at once.
	c.SetHold(context.Background(), state.Hold{User: "alice"})
	if a := serve(t, h, nginxHeader()); a.Header().Get("Auth-Wait") != "1" {
		t.Errorf("hold without a wait: Auth-Wait %q, want 1", a.Header().Get("Auth-Wait"))
	}
}

// A drained backend's users get "try later", even from the cache; with an
// alternate they are checked and sent there; undrained, back home.
func TestDrainAnswersTryLater(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h, c := newControlledHandler(t, v, &log)
	if a := serve(t, h, nginxHeader()); a.Header().Get("Auth-Server") != "192.0.2.22" {
		t.Fatalf("before the drain: %v", a.Header())
	}
	c.SetDrain(context.Background(), state.Drain{Backend: "mailhost01"})
	a := serve(t, h, nginxHeader())
	if got := a.Header().Get("Auth-Status"); got != FailTemporary.Status(imapcheck.IMAP) || a.Header().Get("Auth-Wait") != "3" {
		t.Errorf("drained: %v", a.Header())
	}
	if len(v.calls) != 1 {
		t.Errorf("drained: %d checks in all, want only the first login's", len(v.calls))
	}
	if !strings.Contains(log.String(), `reason="backend drained by the operator"`) {
		t.Errorf("log: %s", log.String())
	}
	if a := serve(t, h, nginxHeader("Auth-User", "zed")); a.Header().Get("Auth-Status") != "OK" {
		t.Errorf("zed on mailhost02 during the drain: %v", a.Header())
	}
	c.SetDrain(context.Background(), state.Drain{Backend: "mailhost01", To: "mailhost02"})
	a = serve(t, h, nginxHeader())
	if a.Header().Get("Auth-Server") != "2001:db8::33" || v.calls[len(v.calls)-1].Address != "[2001:db8::33]:143" {
		t.Errorf("drained to mailhost02: %v, checked at %s", a.Header(), v.calls[len(v.calls)-1].Address)
	}
	if !strings.Contains(log.String(), "backend=mailhost02") || !strings.Contains(log.String(), "drained=mailhost01") {
		t.Errorf("log: %s", log.String())
	}
	// An alternate drained itself takes nothing.
	c.SetDrain(context.Background(), state.Drain{Backend: "mailhost02"})
	if a := serve(t, h, nginxHeader()); a.Header().Get("Auth-Status") != FailTemporary.Status(imapcheck.IMAP) {
		t.Errorf("alternate drained too: %v", a.Header())
	}
	c.Undrain(context.Background(), "mailhost01")
	if a := serve(t, h, nginxHeader()); a.Header().Get("Auth-Server") != "192.0.2.22" {
		t.Errorf("undrained: %v", a.Header())
	}
}

// Explain tells the stage that would end a login, and changes nothing;
// Flush makes the next login a check.
func TestExplainAndFlush(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h, c := newControlledHandler(t, v, &log)
	ctx := context.Background()
	req := ExplainRequest{User: "alice", Client: client, Protocol: imapcheck.IMAP}
	x := h.Explain(ctx, req)
	if x.Rule != "first-letter" || x.Backend != "mailhost01" || x.Health != "unknown" || x.Limit != "" || len(x.Cached) != 0 {
		t.Errorf("fresh: %+v", x)
	}
	serve(t, h, nginxHeader())
	x = h.Explain(ctx, req)
	if len(x.Cached) != 1 || x.Cached[0].Backend != "mailhost01" || x.Cached[0].Protocol != "imap" || !x.Owner {
		t.Errorf("after a login: cached %+v, owner %v", x.Cached, x.Owner)
	}
	if !strings.Contains(x.Verdict, "checked on mailhost01") || !strings.Contains(x.Verdict, "cache") {
		t.Errorf("verdict %q", x.Verdict)
	}
	if n := h.Flush("ALICE"); n != 1 {
		t.Errorf("Flush = %d, want 1", n)
	}
	if x := h.Explain(ctx, req); len(x.Cached) != 0 {
		t.Errorf("after the flush: cached %+v", x.Cached)
	}
	checks := len(v.calls)
	serve(t, h, nginxHeader())
	if len(v.calls) != checks+1 {
		t.Error("the login after the flush was not checked")
	}
	v.outcome = imapcheck.Rejected
	serve(t, h, nginxHeader("Auth-Pass", "wrong", "Client-IP", "198.51.100.7"))
	x = h.Explain(ctx, ExplainRequest{User: "alice", Client: netip.MustParseAddr("198.51.100.9"), Protocol: imapcheck.IMAP})
	if x.Limit != "pair" || !strings.Contains(x.Verdict, "throttled by the pair limit") || x.Network != "198.51.100.0/24" {
		t.Errorf("blocked pair: %+v", x)
	}
	if len(x.Records) != 1 || x.Records[0].Kind != state.Pair || !x.Records[0].Blocked {
		t.Errorf("records %+v", x.Records)
	}
	if again := h.Explain(ctx, ExplainRequest{User: "alice", Client: netip.MustParseAddr("198.51.100.9"), Protocol: imapcheck.IMAP}); again.Limit != "pair" {
		t.Error("explaining changed the block")
	}
	c.SetDrain(ctx, state.Drain{Backend: "mailhost01", To: "mailhost02"})
	c.SetHold(ctx, state.Hold{User: "carol", Wait: 5})
	if x := h.Explain(ctx, req); x.DivertedTo != "mailhost02" || x.Drained == nil || !strings.Contains(x.Verdict, "checked on mailhost02") {
		t.Errorf("drained to mailhost02: %+v", x)
	}
	if x := h.Explain(ctx, ExplainRequest{User: "carol", Client: client, Protocol: imapcheck.IMAP}); x.Held == nil || !strings.Contains(x.Verdict, "held") {
		t.Errorf("carol held: %+v", x)
	}
	if x := h.Explain(ctx, ExplainRequest{User: "bob", Client: client, Protocol: imapcheck.IMAP}); !strings.Contains(x.Verdict, "no backend") {
		t.Errorf("bob, routed nowhere: %+v", x)
	}
}
