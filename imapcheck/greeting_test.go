package imapcheck

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestReadGreeting(t *testing.T) {
	for _, tt := range []struct {
		proto    Protocol
		greeting string
		ok       bool
	}{
		{IMAP, "* OK [CAPABILITY IMAP4rev1] ready\r\n", true},
		{IMAP, "* PREAUTH welcome\r\n", true},
		{IMAP, "* BYE too busy\r\n", false},
		{IMAP, "+OK wrong protocol\r\n", false},
		{POP3, "+OK Dovecot ready.\r\n", true},
		{POP3, "-ERR [SYS/TEMP] later\r\n", false},
		{SMTP, "220 mx.example ESMTP\r\n", true},
		{SMTP, "220-mx.example ESMTP\r\n220-more\r\n220 ready\r\n", true},
		{SMTP, "554 go away\r\n", false},
		{SMTP, "220-and then nothing\r\n", false},
		// A line without end: read up to the bound, not forever.
		{IMAP, "* OK " + strings.Repeat("A", 1<<20), false},
		{IMAP, "", false},
	} {
		client, server := net.Pipe()
		go func() {
			server.Write([]byte(tt.greeting))
			server.Close()
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		err := ReadGreeting(client, tt.proto)
		client.Close()
		if (err == nil) != tt.ok {
			t.Errorf("%s greeting %.40q: error %v, want ok=%v", tt.proto, tt.greeting, err, tt.ok)
		}
	}
}
