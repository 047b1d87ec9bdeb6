package imapcheck

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzPOP3Reply feeds arbitrary server output to the POP3 reply and CAPA
// parsers: whatever a hostile server sends, they return a reply or an
// error, never panic, and a -ERR code is upper case and bracket-free.
func FuzzPOP3Reply(f *testing.F) {
	for _, seed := range []string{
		"+OK\r\n", "+OK ready\r\n", "-ERR\r\n", "-ERR [AUTH] Authentication failed.\r\n",
		"-ERR [SYS/TEMP] try later\r\n", "-ERR [in-use\r\n", "+ \r\n", "+\r\n", "* OK imap\r\n",
		"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n..STUFFED\r\n.\r\n", "\r\n", "+OK " + strings.Repeat("x", 5000) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &pop3Client{conn: &bytes.Buffer{}, r: bufio.NewReaderSize(bytes.NewReader(data), maxLine)}
		_, err := c.reply()
		var pe *pop3Error
		if errors.As(err, &pe) {
			if pe.Code != strings.ToUpper(pe.Code) || strings.Contains(pe.Code, "]") {
				t.Errorf("code %q from %q", pe.Code, data)
			}
		}
		c = &pop3Client{conn: &bytes.Buffer{}, r: bufio.NewReaderSize(bytes.NewReader(data), maxLine)}
		caps, err := c.capa()
		if err == nil && caps != nil {
			for k := range caps {
				if k != strings.ToUpper(k) || k == "" {
					t.Errorf("capability key %q", k)
				}
			}
		}
	})
}
