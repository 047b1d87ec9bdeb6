package backend

import (
	"errors"
	"fmt"
	"testing"

	"github.com/imapgate/imapgate/imapcheck"
)

func TestAnswers(t *testing.T) {
	backends, _ := ParseBackendsWith("mailhost01=192.168.1.22", Defaults{Ports: stdPorts})
	a := newAnswers(backends, Defaults{Ports: Ports{IMAP: 1143}})
	if b, err := a.backend("mailhost01"); err != nil || b != backends["mailhost01"] {
		t.Errorf("a backend name: %v, %v", b, err)
	}
	b, err := a.backend("[2001:db8::5]")
	if err != nil || b.Name != "2001:db8::5" || b.Proxy[imapcheck.IMAP] != ep("2001:db8::5", 1143) || b.Proxy[imapcheck.SMTP] != ep("2001:db8::5", 25) {
		t.Errorf("a host: %+v, %v", b, err)
	}
	if again, _ := a.backend("[2001:db8::5]"); again != b {
		t.Error("the same host twice: two backends")
	}
	for _, v := range []string{"", "   "} {
		if b, err := a.backend(v); b != nil || err != nil {
			t.Errorf("backend(%q) = %v, %v; want none", v, b, err)
		}
	}
	var bad *AnswerError
	for _, v := range []string{"mail host", "10.0.0.1:143", "imap://x"} {
		if _, err := a.backend(v); !errors.As(err, &bad) {
			t.Errorf("backend(%q) = %v, want an AnswerError", v, err)
		}
	}
	for i := range maxAnswerHosts + 10 {
		if _, err := a.backend(fmt.Sprintf("h%d.example", i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.hosts) > maxAnswerHosts {
		t.Errorf("%d host backends kept, bound is %d", len(a.hosts), maxAnswerHosts)
	}
}
