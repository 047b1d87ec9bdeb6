package auth

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// trialHealth is a Health whose backends are all down or degraded, with
// the trial slot free, and that records what it is told.
type trialHealth struct {
	degraded bool

	mu       sync.Mutex
	trials   int // Admit said trial
	ended    int
	observed []imapcheck.Outcome
	busy     bool
}

func (h *trialHealth) Admit(context.Context, string, backend.Endpoint, ...imapcheck.Protocol) (bool, bool, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy {
		return false, false, h.degraded
	}
	h.trials++
	return true, true, h.degraded
}

func (h *trialHealth) EndTrial(string) {
	h.mu.Lock()
	h.ended++
	h.mu.Unlock()
}

func (h *trialHealth) Observe(_ string, _ backend.Endpoint, _ netip.Addr, o imapcheck.Outcome, _ error) {
	h.mu.Lock()
	h.observed = append(h.observed, o)
	h.mu.Unlock()
}

func (h *trialHealth) Recheck() {}

// slowVerifier answers after its context's deadline, or after delay.
type slowVerifier struct{ delay time.Duration }

func (s slowVerifier) Verify(ctx context.Context, _ imapcheck.Request) (imapcheck.Outcome, error) {
	select {
	case <-ctx.Done():
		return imapcheck.Temporary, &imapcheck.Error{Outcome: imapcheck.Temporary, Err: ctx.Err()}
	case <-time.After(s.delay):
		return imapcheck.OK, nil
	}
}

// While a backend is marked down, a login may try it itself: the check
// goes to the backend even when the cache knows the password (a trial is
// for finding out), its result is reported, and the trial is ended.
func TestTrialWhileDown(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.CacheTTL = time.Minute
	serve(t, h, nginxHeader()) // cached now
	health := &trialHealth{}
	h.Health = health
	if w := serve(t, h, nginxHeader()); w.Header().Get("Auth-Status") != "OK" {
		t.Fatalf("trial login: %v", w.Header())
	}
	if len(v.calls) != 2 {
		t.Errorf("the trial made %d checks in all, want the backend asked again (2)", len(v.calls))
	}
	if health.trials != 1 || health.ended != 1 || len(health.observed) != 1 || health.observed[0] != imapcheck.OK {
		t.Errorf("trials %d, ended %d, observed %v; want one trial, ended, OK observed", health.trials, health.ended, health.observed)
	}
	// With the trial slot taken, the next login fails fast.
	health.busy = true
	if w := serve(t, h, nginxHeader()); w.Header().Get("Auth-Status") != imapTemporary {
		t.Errorf("login while a trial runs: %v", w.Header())
	}
	if len(v.calls) != 2 {
		t.Errorf("a refused login reached the backend")
	}
}

// A trial is bounded by TrialTimeout, not only by the handler's Timeout.
func TestTrialTimeout(t *testing.T) {
	var log bytes.Buffer
	h := newTestHandler(t, &fakeVerifier{}, &log)
	h.Verifier = slowVerifier{delay: time.Minute}
	h.Health = &trialHealth{}
	h.Timeout = time.Minute
	h.TrialTimeout = 50 * time.Millisecond
	if w := serve(t, h, nginxHeader()); w.Header().Get("Auth-Status") != imapTemporary {
		t.Errorf("trial on a backend that does not answer: %v", w.Header())
	}
}

// A degraded backend's logins fail fast, saying so in the log.
func TestDegradedFailsFast(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.Health = &trialHealth{degraded: true, busy: true}
	if w := serve(t, h, nginxHeader()); w.Header().Get("Auth-Status") != imapTemporary {
		t.Errorf("login on a degraded backend: %v", w.Header())
	}
	if len(v.calls) != 0 || !strings.Contains(log.String(), string(ReasonBackendDegraded)) {
		t.Errorf("%d checks; log:\n%s", len(v.calls), log.String())
	}
}

// The log says why a check failed when the backend flooded or stalled it.
func TestCheckFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{imapcheck.ErrOversized, ReasonOversized},
		{imapcheck.ErrStalled, ReasonStalled},
	} {
		v := &fakeVerifier{outcome: imapcheck.Temporary, err: &imapcheck.Error{Outcome: imapcheck.Temporary, Err: tc.err}}
		var log bytes.Buffer
		h := newTestHandler(t, v, &log)
		serve(t, h, nginxHeader())
		if !strings.Contains(log.String(), `reason="`+string(tc.want)+`"`) {
			t.Errorf("%v: log does not give reason %q:\n%s", tc.err, tc.want, log.String())
		}
		if !errors.Is(v.err, tc.err) {
			t.Fatal("test broken")
		}
	}
}
