package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

// TestHandlerLimitsGuessing: 40 distinct wrong
// passwords for one account from one network reach the backend at most
// PerPair times, while the owner logs in from another network.
func TestHandlerLimitsGuessing(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.Rejected}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	limits := DefaultLimits
	h.Limits = &limits

	for i := range 40 {
		w := serve(t, h, nginxHeader("Auth-Pass", fmt.Sprintf("guess%d", i), "Client-IP", "203.0.113.50"))
		if got := w.Header().Get("Auth-Status"); got != imapInvalid && got != imapThrottled {
			t.Fatalf("guess %d: Auth-Status %q", i, got)
		}
	}
	if n := len(v.calls); n > limits.PerPair {
		t.Errorf("40 guesses reached the backend %d times, want at most %d", n, limits.PerPair)
	}
	v.outcome = imapcheck.OK
	w := serve(t, h, nginxHeader("Client-IP", "198.51.100.7"))
	if got := w.Header().Get("Auth-Status"); got != "OK" {
		t.Errorf("the owner, from another network: Auth-Status %q", got)
	}
	if !bytes.Contains(log.Bytes(), []byte("outcome=throttled")) {
		t.Errorf("throttled attempts are not logged as such")
	}
	// A throttled attempt ends the session: no Auth-Wait.
	w = serve(t, h, nginxHeader("Auth-Pass", "guess99", "Client-IP", "203.0.113.50"))
	if got := w.Header().Get("Auth-Wait"); got != "" {
		t.Errorf("Auth-Wait for a throttled network = %q, want none", got)
	}
}

// A check the backend held past its deadline (Dovecot's auth penalty) is
// answered "try later", logged as delayed, and counted like a wrong
// password, so that a guesser the backend slows still reaches the limit.
func TestHandlerDelayedCounts(t *testing.T) {
	v := &fakeVerifier{outcome: imapcheck.Delayed, err: errors.New("imapcheck: delayed: LOGIN: context deadline exceeded")}
	var log bytes.Buffer
	h := newTestHandler(t, v, &log)
	limits := DefaultLimits
	h.Limits = &limits
	for i := range 15 {
		w := serve(t, h, nginxHeader("Auth-Protocol", "smtp", "Client-Host", "[UNAVAILABLE]", "Auth-Pass", fmt.Sprintf("guess%d", i), "Client-IP", "203.0.113.50"))
		want, code := StatusTemporary, string(SMTPTemporary)
		if i >= limits.PerPair {
			// Throttled: the password is not called wrong.
			want, code = StatusThrottled, string(SMTPThrottled)
		}
		if got := w.Header().Get("Auth-Status"); got != want || w.Header().Get("Auth-Error-Code") != code {
			t.Fatalf("guess %d: %q %q, want %q %q", i, got, w.Header().Get("Auth-Error-Code"), want, code)
		}
	}
	if n := len(v.calls); n != limits.PerPair {
		t.Errorf("15 delayed guesses reached the backend %d times, want %d", n, limits.PerPair)
	}
	if !bytes.Contains(log.Bytes(), []byte("outcome=delayed")) || bytes.Contains(log.Bytes(), []byte("outcome=temporary")) {
		t.Errorf("delayed checks are not logged as such:\n%s", log.String())
	}
	for _, line := range bytes.Split(log.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte("outcome=delayed")) && !bytes.Contains(line, []byte("level=INFO")) {
			t.Errorf("a delayed check is not logged like an attempt: %s", line)
		}
	}
}

// blockingVerifier holds every check until release is closed.
type blockingVerifier struct {
	started chan imapcheck.Request
	release chan struct{}
}

func (b *blockingVerifier) Verify(ctx context.Context, req imapcheck.Request) (imapcheck.Outcome, error) {
	b.started <- req
	select {
	case <-b.release:
		return imapcheck.Rejected, errors.New("NO [AUTHENTICATIONFAILED]")
	case <-ctx.Done():
		return imapcheck.Temporary, ctx.Err()
	}
}

// Concurrent guesses count before they finish: 32 at once for one user
// from one network get PerPair checks; and one network's checks take at
// most its share of the backend's slots, so another network's login does
// not wait behind them.
func TestHandlerConcurrentGuesses(t *testing.T) {
	b := &blockingVerifier{started: make(chan imapcheck.Request, 64), release: make(chan struct{})}
	h := newTestHandler(t, nil, &bytes.Buffer{})
	h.Verifier = b
	limits := DefaultLimits
	h.Limits = &limits
	h.MaxChecks, h.MaxChecksPerNetwork = 8, 2
	var wg sync.WaitGroup
	statuses := make(chan string, 32)
	for i := range 32 {
		wg.Go(func() {
			w := serve(t, h, nginxHeader("Auth-Pass", fmt.Sprintf("guess%d", i), "Client-IP", "203.0.113.50"))
			statuses <- w.Header().Get("Auth-Status")
		})
	}
	// Two checks start (the network's share); the other admitted ones wait.
	for range 2 {
		<-b.started
	}
	// Another network's login gets a slot at once.
	done := make(chan string, 1)
	go func() {
		w := serve(t, h, nginxHeader("Auth-Pass", "owner-guess", "Client-IP", "198.51.100.7"))
		done <- w.Header().Get("Auth-Status")
	}()
	select {
	case req := <-b.started:
		if req.ClientIP != netip.MustParseAddr("198.51.100.7") {
			t.Errorf("a third check of the guessing network started: %v", req.ClientIP)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("another network's check waited behind the guessing network's")
	}
	close(b.release)
	wg.Wait()
	<-done
	close(statuses)
	checks := 1 + 2 + len(b.started) // the other network's, the first two, the rest
	if checks-1 > limits.PerPair {
		t.Errorf("32 concurrent guesses got %d checks, want at most %d", checks-1, limits.PerPair)
	}
	for s := range statuses {
		if s != imapInvalid && s != imapThrottled {
			t.Errorf("a concurrent guess was answered %q", s)
		}
	}
}

// Auth-Wait after a refusal counts the time the backend held the answer
// (Dovecot's penalty) as waited already, but keeps the session going.
func TestRejectedWaitLessHeld(t *testing.T) {
	for _, tc := range []struct {
		attempt, tried int
		held           time.Duration
		want           int
	}{
		{1, 1, 0, 2},
		{1, 5, 0, 10},
		{1, 5, 3 * time.Second, 7},
		{1, 7, 15500 * time.Millisecond, 1},
		{10, 7, 0, 0},
	} {
		if got := rejectedWait(tc.attempt, tc.tried, tc.held); got != tc.want {
			t.Errorf("rejectedWait(%d, %d, %v) = %d, want %d", tc.attempt, tc.tried, tc.held, got, tc.want)
		}
	}
}
