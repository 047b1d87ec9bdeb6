package imapcheck

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
)

// Credentials that must not reach the wire are refused before dialing.
func TestParseSecurity(t *testing.T) {
	for _, s := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		if got, err := ParseSecurity(s.String()); err != nil || got != s {
			t.Errorf("ParseSecurity(%q) = %v, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "ssl", "TLS", "none "} {
		if _, err := ParseSecurity(bad); err == nil {
			t.Errorf("ParseSecurity(%q) accepted", bad)
		}
	}
}

func TestRefusedBeforeDialing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		security Security
		req      Request
		want     Outcome
	}{
		{"POP3 CR LF in password", SecurityNone, Request{Protocol: POP3, User: "alice", Password: "s3cret\r\nDELE 1"}, Unsupported},
		{"POP3 LF in user", SecurityNone, Request{Protocol: POP3, User: "alice\nDELE 1", Password: "s3cret"}, Unsupported},
		{"POP3 CR in user", SecurityNone, Request{Protocol: POP3, User: "alice\r", Password: "s3cret"}, Unsupported},
		{"POP3 NUL in password", SecurityNone, Request{Protocol: POP3, User: "alice", Password: "s3\x00cret"}, Unsupported},
		{"IMAP NUL in password", SecurityNone, Request{Protocol: IMAP, User: "alice", Password: "s3\x00cret"}, Unsupported},
		{"IMAP NUL in user", SecurityNone, Request{Protocol: IMAP, User: "al\x00ice", Password: "s3cret"}, Unsupported},
		{"IMAP empty user", SecurityNone, Request{Protocol: IMAP, User: "", Password: "s3cret"}, Rejected},
		{"POP3 empty user", SecurityNone, Request{Protocol: POP3, User: "", Password: "s3cret"}, Rejected},
		{"SMTP is not a check protocol", SecurityNone, Request{Protocol: SMTP, User: "alice", Password: "s3cret"}, Unsupported},
		{"unknown protocol", SecurityNone, Request{Protocol: "nntp", User: "alice", Password: "s3cret"}, Unsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, func(p *peer) {
				if b := p.drain(); b != "" {
					t.Errorf("server received %q", b)
				}
			})
			tc.req.Address = srv.Addr
			var dials atomic.Int32
			v := &Verifier{Dialer: countingDialer(&dials)}
			tc.req.Security = tc.security
			got, err := v.Verify(context.Background(), tc.req)
			srv.wait()
			checkResult(t, got, err, tc.want, tc.req.Password, "")
			if n := dials.Load(); n != 0 || srv.conns.Load() != 0 {
				t.Errorf("dialed %d times, server saw %d connections, want none", n, srv.conns.Load())
			}
			t.Log(err)
		})
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Outcome: Rejected, Reply: "NO [AUTHENTICATIONFAILED] Authentication failed."},
			`imapcheck: rejected: server replied "NO [AUTHENTICATIONFAILED] Authentication failed."`},
		{&Error{Outcome: Temporary, Err: io.ErrUnexpectedEOF},
			`imapcheck: temporary: unexpected EOF`},
		{&Error{Outcome: Unsupported, Reply: "-ERR x\r\nforged", Err: errors.New("server refused STLS")},
			`imapcheck: unsupported: server replied "-ERR x\r\nforged": server refused STLS`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	e := &Error{Outcome: Temporary, Err: io.ErrUnexpectedEOF}
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Error("Unwrap does not reach the underlying error")
	}
}

// A server may echo the password; it is scrubbed from the error's text but
// the underlying error stays reachable.
func TestFailScrubsPassword(t *testing.T) {
	v := &Verifier{}
	inner := errors.New("in response: bad token \"hunter22\"")
	e := v.fail(context.Background(), Request{Password: "hunter22"}, &Error{Outcome: Temporary, Reply: "NO hunter22 is wrong", Err: inner}, true)
	if strings.Contains(e.Error(), "hunter22") {
		t.Errorf("Error() = %q holds the password", e.Error())
	}
	if !errors.Is(e, inner) {
		t.Error("the underlying error is lost")
	}
}

func TestRedactLogin(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		secret     bool
	}{
		{"PASS s3cret", "PASS <redacted>", true},
		{"PASS s3 cr et", "PASS <redacted>", true},
		{"AUTH PLAIN AGFsaWNlAHMzY3JldA==", "AUTH PLAIN <redacted>", true},
		{"AUTH PLAIN", "AUTH PLAIN", true},
		{`T1 LOGIN "alice" "s3cret"`, "T1 LOGIN <redacted>", true},
		{`T1 login alice {6+}`, "T1 login <redacted>", true},
		{"T1 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==", "T1 AUTHENTICATE PLAIN <redacted>", true},
		{"T1 AUTHENTICATE PLAIN", "T1 AUTHENTICATE PLAIN", true},
		{"USER alice", "USER alice", false},
		{"T2 LOGOUT", "T2 LOGOUT", false},
		{"CAPA", "CAPA", false},
	} {
		got, secret := redactLogin(tc.line)
		if got != tc.want || secret != tc.secret {
			t.Errorf("redactLogin(%q) = %q, %v; want %q, %v", tc.line, got, secret, tc.want, tc.secret)
		}
	}
}
