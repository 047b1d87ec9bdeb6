package backend

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

var errStall = &imapcheck.Error{Outcome: imapcheck.Temporary, Err: imapcheck.ErrStalled}

// While a backend's check address is down, one check at a time may try
// it; an answer marks the address up at once, without a probe.
func TestAdmitTrialAndComeBack(t *testing.T) {
	down := closedEndpoint(t)
	smtpDown := closedEndpoint(t)
	changes := make(chan bool, 8)
	h := &Health{
		Backends: map[string]*Backend{"b": {Name: "b",
			Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: down, imapcheck.SMTP: smtpDown},
			Check: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: down}}},
		OnChange: func(_ string, proto imapcheck.Protocol, _ string, up bool, _ error) {
			if proto == imapcheck.IMAP {
				changes <- up
			}
		},
	}
	h.ProbeAll(context.Background())
	if <-changes {
		t.Fatal("a closed port probed up")
	}
	ok, trial, degraded := h.Admit(context.Background(), "b", down, imapcheck.IMAP)
	if !ok || !trial || degraded {
		t.Fatalf("Admit on a down backend = %v, %v, %v; want a trial", ok, trial, degraded)
	}
	if ok, _, _ := h.Admit(context.Background(), "b", down, imapcheck.IMAP); ok {
		t.Error("a second trial was admitted while the first runs")
	}
	// An SMTP login needs nginx's SMTP address, which a check cannot try.
	h.EndTrial("b")
	if ok, _, _ := h.Admit(context.Background(), "b", down, imapcheck.SMTP, imapcheck.IMAP); ok {
		t.Error("a trial was admitted although the address down is not the check's")
	}
	h.Observe("b", down, netip.Addr{}, imapcheck.Temporary, errors.New("connection refused"))
	if h.Up("b", imapcheck.IMAP) {
		t.Error("a failed trial marked the backend up")
	}
	h.Observe("b", down, netip.Addr{}, imapcheck.Rejected, nil)
	if !h.Up("b", imapcheck.IMAP) || !<-changes {
		t.Error("an answered trial did not mark the backend up")
	}
	if ok, trial, _ := h.Admit(context.Background(), "b", down, imapcheck.IMAP); !ok || trial {
		t.Errorf("Admit after the backend came back = %v, trial %v; want an ordinary check", ok, trial)
	}
}

// Stalled checks for different clients in a row degrade a backend; the
// same client again and again does not; an answered check ends it.
func TestDegraded(t *testing.T) {
	ep, _ := greeter(t, "* OK\r\n")
	var mu sync.Mutex
	var turns []bool
	h := &Health{
		Backends: map[string]*Backend{"b": {Name: "b",
			Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: ep},
			Check: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: ep}}},
		OnDegraded: func(_ string, degraded bool, _ error) {
			mu.Lock()
			turns = append(turns, degraded)
			mu.Unlock()
		},
	}
	h.ProbeAll(context.Background())
	guesser := netip.MustParseAddr("203.0.113.9")
	for range 10 {
		h.Observe("b", ep, guesser, imapcheck.Temporary, errStall)
	}
	if h.Degraded("b") {
		t.Fatal("one client's stalls degraded the backend")
	}
	h.Observe("b", ep, netip.MustParseAddr("198.51.100.1"), imapcheck.Temporary, errStall)
	h.Observe("b", ep, netip.MustParseAddr("198.51.100.2"), imapcheck.Temporary, errStall)
	if !h.Degraded("b") {
		t.Fatal("three clients' stalls in a row did not degrade the backend")
	}
	if ready, missing := h.Ready(); ready || !strings.Contains(strings.Join(missing, ";"), "b degraded") {
		t.Errorf("Ready = %v, %v; want b degraded", ready, missing)
	}
	// The stall that degraded it was its trial; the next is an Interval
	// away.
	if ok, _, degraded := h.Admit(context.Background(), "b", ep, imapcheck.IMAP); ok || !degraded {
		t.Errorf("Admit at once on a degraded backend = %v, %v; want refused as degraded", ok, degraded)
	}
	h.mu.Lock()
	h.checks["b"].lastTrial = time.Time{}
	h.mu.Unlock()
	ok, trial, degraded := h.Admit(context.Background(), "b", ep, imapcheck.IMAP)
	if !ok || !trial || !degraded {
		t.Fatalf("Admit on a degraded backend = %v, %v, %v; want a trial", ok, trial, degraded)
	}
	if ok, _, degraded := h.Admit(context.Background(), "b", ep, imapcheck.IMAP); ok || !degraded {
		t.Errorf("second Admit on a degraded backend = %v, %v; want refused as degraded", ok, degraded)
	}
	h.EndTrial("b")
	if ok, _, degraded := h.Admit(context.Background(), "b", ep, imapcheck.IMAP); ok || !degraded {
		t.Errorf("Admit on a degraded backend within an Interval of its trial = %v, %v; want refused", ok, degraded)
	}
	h.Observe("b", ep, guesser, imapcheck.OK, nil)
	h.EndTrial("b")
	if h.Degraded("b") {
		t.Error("an answered check did not end the degraded spell")
	}
	if ready, _ := h.Ready(); !ready {
		t.Error("not ready after the backend answered")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(turns) != 2 || !turns[0] || turns[1] {
		t.Errorf("OnDegraded saw %v, want [true false]", turns)
	}
	// An answer in between ends a run of stalls.
	h.Observe("b", ep, netip.MustParseAddr("198.51.100.1"), imapcheck.Temporary, errStall)
	h.Observe("b", ep, netip.MustParseAddr("198.51.100.2"), imapcheck.Temporary, errStall)
	h.Observe("b", ep, guesser, imapcheck.Rejected, nil)
	h.Observe("b", ep, netip.MustParseAddr("198.51.100.3"), imapcheck.Temporary, errStall)
	if h.Degraded("b") {
		t.Error("stalls with an answer between them degraded the backend")
	}
}

// TestTrialReprobesNginxAddress: when the address down is nginx's (the
// check logs in elsewhere, as behind the Cyrus howto's TLS frontend),
// one login probes it again itself, and a trial runs once it answers.
func TestTrialReprobesNginxAddress(t *testing.T) {
	proxy, stop := greeter(t, "* OK ready\r\n")
	check := closedEndpoint(t)
	h := &Health{Backends: map[string]*Backend{"b": {Name: "b",
		Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: proxy},
		Check: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: check}}}}
	// Both seen down by the last probes; nginx's address is back since.
	for _, tg := range h.targets() {
		h.record(tg, errors.New("connection refused"))
	}
	ok, trial, _ := h.Admit(context.Background(), "b", check, imapcheck.IMAP)
	if !ok || !trial {
		t.Fatalf("Admit = %v, trial %v; want a trial once nginx's address answers again", ok, trial)
	}
	h.EndTrial("b")
	if !h.state[healthKey{"b", imapcheck.IMAP, false}] {
		t.Error("the reprobe did not record nginx's address up")
	}
	stop()
	for _, tg := range h.targets() {
		h.record(tg, errors.New("connection refused"))
	}
	if ok, _, _ := h.Admit(context.Background(), "b", check, imapcheck.IMAP); ok {
		t.Error("a trial ran although nginx's address still does not answer")
	}
}
