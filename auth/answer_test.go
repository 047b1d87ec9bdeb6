package auth

import (
	"net/http"
	"testing"

	"github.com/imapgate/imapgate/imapcheck"
)

// The Auth-Status an IMAP client of the tests is sent.
var (
	imapInvalid   = FailInvalid.Status(imapcheck.IMAP)
	imapTemporary = FailTemporary.Status(imapcheck.IMAP)
	imapThrottled = FailThrottled.Status(imapcheck.IMAP)
)

// Each failure reaches the client with its protocol's response code in
// front (nginx copies Auth-Status after "NO " or "-ERR "), SMTP's in
// Auth-Error-Code: a wrong password is AUTHENTICATIONFAILED / AUTH / 535,
// anything that did not judge the password (a backend problem, the
// guessing limits) is UNAVAILABLE / SYS/TEMP / 451 or 454.
func TestAnswerCodes(t *testing.T) {
	for _, tc := range []struct {
		v                Verdict
		imap, pop3, smtp string
		smtpCode         SMTPCode
	}{
		{Verdict{Outcome: OutcomeRejected}, "[AUTHENTICATIONFAILED] " + StatusInvalid, "[AUTH] " + StatusInvalid, StatusInvalid, SMTPInvalid},
		{Verdict{Outcome: OutcomeTemporary}, "[UNAVAILABLE] " + StatusTemporary, "[SYS/TEMP] " + StatusTemporary, StatusTemporary, SMTPTemporary},
		{Verdict{Outcome: OutcomeUnsupported, Reason: ReasonCannotVerify}, "[UNAVAILABLE] " + StatusTemporary, "[SYS/TEMP] " + StatusTemporary, StatusTemporary, SMTPTemporary},
		{Verdict{Outcome: OutcomeThrottled}, "[UNAVAILABLE] " + StatusThrottled, "[SYS/TEMP] " + StatusThrottled, StatusThrottled, SMTPThrottled},
		{Verdict{Outcome: OutcomeUnsupported, Reason: ReasonMethod}, StatusMethod, StatusMethod, StatusMethod, SMTPMethod},
		{Verdict{Outcome: OutcomeRefused}, StatusAuthRequired, StatusAuthRequired, StatusAuthRequired, SMTPAuthRequired},
	} {
		for proto, want := range map[imapcheck.Protocol]string{imapcheck.IMAP: tc.imap, imapcheck.POP3: tc.pop3, imapcheck.SMTP: tc.smtp} {
			a := tc.v.answer(Request{Protocol: proto, Attempt: 1})
			if a.status != want {
				t.Errorf("%s %s: Auth-Status %q, want %q", tc.v.Outcome, proto, a.status, want)
			}
			wantSMTP := SMTPCode("")
			if proto == imapcheck.SMTP {
				wantSMTP = tc.smtpCode
			}
			if a.smtp != wantSMTP {
				t.Errorf("%s %s: Auth-Error-Code %q, want %q", tc.v.Outcome, proto, a.smtp, wantSMTP)
			}
		}
	}
	// A request whose protocol is not known gets the text alone.
	if a := (Verdict{Outcome: OutcomeMalformed}).answer(Request{}); a.status != StatusMalformed || a.code != http.StatusBadRequest {
		t.Errorf("malformed: %+v", a)
	}
}
