package backend

import (
	"github.com/imapgate/imapgate/imapcheck"

	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func FuzzParseBackends(f *testing.F) {
	for _, s := range []string{
		"mailhost01=192.168.1.22;mailhost02=192.168.1.33",
		"server3=imap://127.0.0.1:9143,pop3://127.0.0.1:9110;server4=imap://127.0.0.1:9144",
		"a=[::1];b=2001:db8::1;c=mail.example.org.",
		"s=smtp://mx:587,imaps://imap.example,pop3s://[::1]:995",
		"a=imap://h:0", "=x", "a=imap://user@h/path?q",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, spec string, implicitTLS bool) {
		bs, err := ParseBackends(spec, stdPorts, implicitTLS)
		if err != nil {
			if bs != nil {
				t.Errorf("error %v with a non-nil result", err)
			}
			return
		}
		if len(bs) == 0 {
			t.Fatal("no error and no backends")
		}
		for name, b := range bs {
			if b == nil || b.Name != name || validName(name) != nil {
				t.Fatalf("backend %q: bad entry %+v", name, b)
			}
			if len(b.Proxy) == 0 {
				t.Errorf("backend %q proxies nothing", name)
			}
			for p, e := range b.Proxy {
				checkEndpoint(t, name, p, e)
				if p == imapcheck.SMTP {
					continue
				}
				if c, ok := b.Check[p]; !ok || !implicitTLS && c != e {
					t.Errorf("backend %q %s: check %v does not follow proxy %v", name, p, c, e)
				}
			}
			for p, e := range b.Check {
				if p != imapcheck.IMAP && p != imapcheck.POP3 {
					t.Errorf("backend %q: check for %s", name, p)
				}
				checkEndpoint(t, name, p, e)
			}
			// What was parsed must parse again to the same thing, so a
			// backend can be written back into a configuration.
			if !implicitTLS && len(b.Proxy) == 3 {
				h := b.Proxy[imapcheck.IMAP].Host
				again, err := ParseBackends(name+"="+h, stdPorts, false)
				if err != nil || again[name].Proxy[imapcheck.IMAP].Host != h {
					t.Errorf("host %q does not parse again: %v", h, err)
				}
			}
		}
	})
}

// checkEndpoint asserts the invariants of a parsed endpoint.
func checkEndpoint(t *testing.T, name string, p imapcheck.Protocol, e Endpoint) {
	t.Helper()
	if e.Host == "" || e.Port == 0 {
		t.Errorf("backend %q %s: incomplete endpoint %+v", name, p, e)
	}
	if strings.ContainsAny(e.Host, "[]/@?# \t;,=") {
		t.Errorf("backend %q %s: host %q has a stray character", name, p, e.Host)
	}
	if a, err := netip.ParseAddr(e.Host); err == nil && (a.Zone() != "" || a.Is4In6() || a.String() != e.Host) {
		t.Errorf("backend %q %s: IP %q not canonical", name, p, e.Host)
	}
}

func FuzzParseUsersFile(f *testing.F) {
	for _, s := range []string{
		"alice mailhost01\nbob\n# comment\n\n",
		"\tcarol\tmailhost03 # trailing\r\n",
		"alice\nALICE\n",
		"x y z\n",
		"émile nowhere\n",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	bs := testBackends(f)
	f.Fuzz(func(t *testing.T, data []byte, withDefault bool) {
		var def *Backend
		if withDefault {
			def = bs["mailhost02"]
		}
		table, err := parseUsers(data, bs, def)
		if err != nil {
			if pe, ok := err.(*ParseError); !ok || pe.Line < 1 {
				t.Fatalf("error %v is not a ParseError with a line", err)
			}
			return
		}
		// Every user a line lists is found, in its own case and folded,
		// on a backend of the configuration.
		sc := bufio.NewScanner(bytes.NewReader(data))
		var fields [3][]byte
		for sc.Scan() {
			if lineFields(sc.Bytes(), &fields) == 0 {
				continue
			}
			user := string(fields[0])
			if strings.ContainsAny(user, " \t\r\n#") {
				t.Errorf("bad user %q", user)
			}
			b := table.lookup(user)
			if b == nil || table.lookup(foldUser(user)) != b {
				t.Errorf("user %q: %v, folded %v", user, b, table.lookup(foldUser(user)))
			}
			if b != nil && bs[b.Name] != b && b != def {
				t.Errorf("user %q has a backend %v not from the configuration", user, b)
			}
		}
	})
}
