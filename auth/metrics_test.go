package auth

import (
	"context"

	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.Metrics = NewMetrics(reg)
	h.CacheTTL = time.Minute
	limits := Limits{Limits: state.Limits{PerPair: 1, Window: time.Minute}}
	h.Limits = &limits

	serve(t, h, nginxHeader())                        // miss, check ok
	serve(t, h, nginxHeader())                        // hit
	serve(t, h, nginxHeader("Auth-Protocol", "pop3")) // miss (POP3 check), ok
	v.outcome = imapcheck.Rejected
	serve(t, h, nginxHeader("Auth-Pass", "wrong"))  // rejected
	serve(t, h, nginxHeader("Auth-Pass", "wrong2")) // throttled
	serve(t, h, nginxHeader("Auth-Method", "<absent>"))
	h.Metrics.BackendUp("mailhost01", "imap", true)

	for _, tt := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{h.Metrics.requests.WithLabelValues("imap", "ok"), 2},
		{h.Metrics.requests.WithLabelValues("pop3", "ok"), 1},
		{h.Metrics.requests.WithLabelValues("imap", "rejected"), 1},
		{h.Metrics.requests.WithLabelValues("imap", "throttled"), 1},
		{h.Metrics.requests.WithLabelValues("", "malformed"), 1},
		{h.Metrics.cache.WithLabelValues("hit"), 1},
		{h.Metrics.cache.WithLabelValues("miss"), 3},
		{h.Metrics.throttled.WithLabelValues("pair"), 1},
		{h.Metrics.inFlight, 0},
		{h.Metrics.backendUp.WithLabelValues("mailhost01", "imap"), 1},
	} {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			desc := make(chan *prometheus.Desc, 1)
			tt.c.Describe(desc)
			t.Errorf("%v = %v, want %v", <-desc, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(h.Metrics.checkDuration); n != 3 {
		t.Errorf("%d check duration series, want 3 (imap ok, pop3 ok, imap rejected)", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range out {
		if strings.Contains(mf.String(), "secret") || strings.Contains(mf.String(), "alice") {
			t.Errorf("metric %s carries a user or password", mf.GetName())
		}
	}
}

// downHealth reports every backend down, with a trial running.
type downHealth struct{}

func (downHealth) Admit(context.Context, string, backend.Endpoint, ...imapcheck.Protocol) (bool, bool, bool) {
	return false, false, false
}
func (downHealth) EndTrial(string)                                                        {}
func (downHealth) Observe(string, backend.Endpoint, netip.Addr, imapcheck.Outcome, error) {}
func (downHealth) Recheck()                                                               {}

func TestHandlerBackendKnownDown(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.OK}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	h.CacheTTL = time.Minute
	serve(t, h, nginxHeader()) // cached now
	h.Health = downHealth{}
	w := serve(t, h, nginxHeader())
	if w.Header().Get("Auth-Status") != imapTemporary {
		t.Errorf("login for a backend known down: %v", w.Header())
	}
	if len(v.calls) != 1 {
		t.Errorf("backend known down was asked: %d checks", len(v.calls))
	}
	if !strings.Contains(log.String(), "backend down") {
		t.Errorf("log does not say the backend is down:\n%s", log.String())
	}
}
