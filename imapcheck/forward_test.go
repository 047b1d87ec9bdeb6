package imapcheck

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestForwardClientIP shows the client's address told to the server
// before the login, over IMAP with ID and over POP3 with XCLIENT, and the
// login going on when the server does not take it.
func TestForwardClientIP(t *testing.T) {
	client := netip.MustParseAddr("::ffff:192.0.2.7")
	for _, tc := range []struct {
		name   string
		proto  Protocol
		script func(p *peer)
	}{{
		name:  "imap ID",
		proto: IMAP,
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 ID] ready")
			p.expect(`F1 ID ("x-originating-ip" "192.0.2.7")`)
			p.send(`* ID ("name" "Dovecot")`, "F1 OK ID completed.")
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T2")
		},
	}, {
		// The login does not wait for the ID's answer, and the answer,
		// with a literal in it, is kept from imapclient.
		name:  "imap ID pipelined with LOGIN",
		proto: IMAP,
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1 ID] ready")
			p.expect(`F1 ID ("x-originating-ip" "192.0.2.7")`)
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send(`* ID ("name" {7}`, `Dovecot "version" "2.3")`, "F1 OK ID completed.")
			p.send("T1 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T2")
		},
	}, {
		name:  "imap without ID",
		proto: IMAP,
		script: func(p *peer) {
			p.send("* OK [CAPABILITY IMAP4rev1] ready")
			p.expect(`F1 ID ("x-originating-ip" "192.0.2.7")`)
			p.send("F1 BAD Unknown command")
			p.expect(`T1 LOGIN "alice" "s3cret"`)
			p.send("T1 OK [CAPABILITY IMAP4rev1] Logged in")
			imapLogout(p, "T2")
		},
	}, {
		name:  "pop3 XCLIENT",
		proto: POP3,
		script: func(p *peer) {
			p.send("+OK [XCLIENT] Dovecot ready.")
			p.expect("CAPA")
			p.send("+OK", "USER", ".")
			p.expect("XCLIENT ADDR=192.0.2.7")
			p.send("+OK")
			p.expect("USER alice")
			p.send("+OK")
			p.expect("PASS s3cret")
			p.send("+OK Logged in.")
			p.expect("QUIT")
			p.sendMaybe("+OK Logging out.")
		},
	}, {
		name:  "pop3 without XCLIENT in the greeting",
		proto: POP3,
		script: func(p *peer) {
			p.send("+OK Dovecot ready.")
			p.expect("CAPA")
			p.send("+OK", "USER", ".")
			p.expect("USER alice")
			p.send("+OK")
			p.expect("PASS s3cret")
			p.send("+OK Logged in.")
			p.expect("QUIT")
			p.sendMaybe("+OK Logging out.")
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startScript(t, nil, tc.script)
			var debug syncBuffer
			v := &Verifier{Debug: &debug, Timeout: 5 * time.Second, ForwardClientIP: true}
			got, err := v.Verify(context.Background(), Request{Protocol: tc.proto, Address: srv.Addr,
				User: "alice", Password: "s3cret", ClientIP: client})
			srv.wait()
			checkResult(t, got, err, OK, "s3cret", debug.String())
		})
	}
}
