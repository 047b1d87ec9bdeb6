package backend

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

func TestParseBackendsWithCheckOptions(t *testing.T) {
	none, starttls, tls := imapcheck.SecurityNone, imapcheck.SecurityStartTLS, imapcheck.SecurityTLS
	tests := []struct {
		name     string
		spec     string
		security imapcheck.Security
		want     *Backend
	}{
		{
			name:     "Cyrus howto: proxied to the stream frontend, checked on the server over TLS",
			spec:     "server3=imap://127.0.0.1:9143, verify-imap=server3:993, verify-tls=tls, verify-ca-file=/etc/imapgate/cyrus-ca.pem",
			security: none,
			want: &Backend{
				Name:     "server3",
				Proxy:    eps{imapcheck.IMAP: ep("127.0.0.1", 9143)},
				Check:    eps{imapcheck.IMAP: ep("server3", 993)},
				CheckTLS: CheckTLS{Security: tls, CAFile: "/etc/imapgate/cyrus-ca.pem"},
			},
		},
		{
			name:     "verify address without a port, implicit TLS: the IMAPS port",
			spec:     "s=imap://127.0.0.1:9143,verify-imap=[2001:db8::3],verify-tls=tls",
			security: none,
			want: &Backend{
				Name:     "s",
				Proxy:    eps{imapcheck.IMAP: ep("127.0.0.1", 9143)},
				Check:    eps{imapcheck.IMAP: ep("2001:db8::3", 993)},
				CheckTLS: CheckTLS{Security: tls},
			},
		},
		{
			name:     "verify address without a port, STARTTLS from the default: the IMAP port",
			spec:     "s=imap://127.0.0.1:9143,pop3://127.0.0.1:9110,verify-imap=10.0.0.3,verify-pop3=10.0.0.3",
			security: starttls,
			want: &Backend{
				Name:     "s",
				Proxy:    eps{imapcheck.IMAP: ep("127.0.0.1", 9143), imapcheck.POP3: ep("127.0.0.1", 9110)},
				Check:    eps{imapcheck.IMAP: ep("10.0.0.3", 143), imapcheck.POP3: ep("10.0.0.3", 110)},
				CheckTLS: CheckTLS{Security: starttls},
			},
		},
		{
			name:     "host form with its own implicit TLS",
			spec:     "m=mail.example.org,verify-tls=tls",
			security: none,
			want: &Backend{
				Name:     "m",
				Proxy:    eps{imapcheck.IMAP: ep("mail.example.org", 143), imapcheck.POP3: ep("mail.example.org", 110), imapcheck.SMTP: ep("mail.example.org", 25)},
				Check:    eps{imapcheck.IMAP: ep("mail.example.org", 993), imapcheck.POP3: ep("mail.example.org", 995)},
				CheckTLS: CheckTLS{Security: tls},
			},
		},
		{
			name:     "a plain backend among TLS ones",
			spec:     "old=10.0.0.9,verify-tls=none",
			security: tls,
			want: &Backend{
				Name:     "old",
				Proxy:    eps{imapcheck.IMAP: ep("10.0.0.9", 143), imapcheck.POP3: ep("10.0.0.9", 110), imapcheck.SMTP: ep("10.0.0.9", 25)},
				Check:    eps{imapcheck.IMAP: ep("10.0.0.9", 143), imapcheck.POP3: ep("10.0.0.9", 110)},
				CheckTLS: CheckTLS{Security: none},
			},
		},
		{
			name:     "STARTTLS backend: imaps URL accepted but unused, as with the global mode",
			spec:     "s=imap://h:143,imaps://h:993,verify-tls=starttls",
			security: tls,
			want: &Backend{
				Name:     "s",
				Proxy:    eps{imapcheck.IMAP: ep("h", 143)},
				Check:    eps{imapcheck.IMAP: ep("h", 143)},
				CheckTLS: CheckTLS{Security: starttls},
			},
		},
		{
			name:     "SMTP-only backend checked over IMAP elsewhere",
			spec:     "mx=smtp://mx:587,verify-imap=imap.example:143",
			security: none,
			want: &Backend{
				Name:  "mx",
				Proxy: eps{imapcheck.SMTP: ep("mx", 587)},
				Check: eps{imapcheck.IMAP: ep("imap.example", 143)},
			},
		},
		{
			name:     "CA file with the default TLS mode",
			spec:     "s=10.0.0.1,verify-ca-file=/ca.pem",
			security: starttls,
			want: &Backend{
				Name:     "s",
				Proxy:    eps{imapcheck.IMAP: ep("10.0.0.1", 143), imapcheck.POP3: ep("10.0.0.1", 110), imapcheck.SMTP: ep("10.0.0.1", 25)},
				Check:    eps{imapcheck.IMAP: ep("10.0.0.1", 143), imapcheck.POP3: ep("10.0.0.1", 110)},
				CheckTLS: CheckTLS{Security: starttls, CAFile: "/ca.pem"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBackendsWith(tt.spec, Defaults{Ports: stdPorts, Security: tt.security})
			if err != nil {
				t.Fatalf("ParseBackendsWith(%q): %v", tt.spec, err)
			}
			if len(got) != 1 || !reflect.DeepEqual(got[tt.want.Name], tt.want) {
				for _, b := range got {
					t.Logf("got %+v", *b)
				}
				t.Errorf("ParseBackendsWith(%q) differs from want %+v", tt.spec, *tt.want)
			}
		})
	}
}

// TestParseBackendsWithKeepsOldForms: every spec written before the
// options existed means the same through ParseBackendsWith as through
// ParseBackends, in both check modes it could express.
func TestParseBackendsWithKeepsOldForms(t *testing.T) {
	specs := []string{
		"mailhost01=192.168.1.22;mailhost02=192.168.1.33",
		" a = 2001:db8::1 ; b=[2001:DB8::2];",
		"m.x_1=mail.example.org.;v4=::ffff:10.0.0.1",
		"server3=imap://127.0.0.1:9143,pop3://127.0.0.1:9110;server4=imap://127.0.0.1:9144",
		"s=IMAP://[::1], smtp://mx.example ,,pop3://[::1]:1110,",
		"s=imap://10.0.0.1:143,pop3://10.0.0.1,imaps://10.0.0.2:9993",
		"s=smtp://mx:587,imaps://imap.example",
	}
	for _, spec := range specs {
		for _, implicit := range []bool{false, true} {
			old, err := ParseBackends(spec, stdPorts, implicit)
			if err != nil {
				t.Fatalf("ParseBackends(%q, %v): %v", spec, implicit, err)
			}
			sec := imapcheck.SecurityNone
			if implicit {
				sec = imapcheck.SecurityTLS
			}
			got, err := ParseBackendsWith(spec, Defaults{Ports: stdPorts, Security: sec})
			if err != nil {
				t.Fatalf("ParseBackendsWith(%q, %s): %v", spec, sec, err)
			}
			if !reflect.DeepEqual(got, old) {
				t.Errorf("%q (%s): ParseBackendsWith differs from ParseBackends", spec, sec)
			}
		}
		// STARTTLS checks on the proxied address, like none.
		plain, _ := ParseBackends(spec, stdPorts, false)
		got, err := ParseBackendsWith(spec, Defaults{Ports: stdPorts, Security: imapcheck.SecurityStartTLS})
		if err != nil {
			t.Fatalf("%q (starttls): %v", spec, err)
		}
		for name, b := range got {
			if !reflect.DeepEqual(b.Check, plain[name].Check) || b.CheckTLS.Security != imapcheck.SecurityStartTLS {
				t.Errorf("%q (starttls): backend %s checked at %v (%s), want %v like none, over starttls", spec, name, b.Check, b.CheckTLS.Security, plain[name].Check)
			}
		}
	}
}

func TestParseBackendsWithCheckOptionErrors(t *testing.T) {
	tests := []struct {
		spec     string
		security imapcheck.Security
		want     []string
	}{
		{"a=h,verify-foo=1", imapcheck.SecurityNone, []string{`"a=h,verify-foo=1"`, `unknown option "verify-foo"`, "verify-imap"}},
		{"a=h,verify-tls=tls,verify-tls=none", imapcheck.SecurityNone, []string{"verify-tls given twice"}},
		{"a=h,verify-imap=", imapcheck.SecurityNone, []string{`"verify-imap="`, "empty value"}},
		{"a=h,verify-tls=ssl", imapcheck.SecurityNone, []string{`"ssl" is not none, starttls or tls`}},
		{"a=h,verify-ca-file=/ca.pem", imapcheck.SecurityNone, []string{"verify-ca-file=/ca.pem", "TLS is none"}},
		{"a=h,verify-tls=none,verify-ca-file=/ca.pem", imapcheck.SecurityTLS, []string{"TLS is none"}},
		{"a=h,verify-imap=imaps://h", imapcheck.SecurityNone, []string{"not a URL"}},
		{"a=h,verify-imap=h:0", imapcheck.SecurityNone, []string{"verify-imap=h:0", "bad port"}},
		{"a=h,verify-pop3=h/x", imapcheck.SecurityNone, []string{"want host[:port]"}},
		{"a=h,verify-imap=fe80::1%eth0", imapcheck.SecurityNone, []string{"zones"}},
		{"a=imap://h,imaps://h:993,verify-imap=h2", imapcheck.SecurityNone, []string{`"imaps://h:993"`, "give one of them"}},
		{"a=verify-tls=tls", imapcheck.SecurityNone, []string{"no address before the options"}},
		{"a=,verify-tls=tls", imapcheck.SecurityNone, []string{"no address before the options"}},
		{"a=h,h2,verify-tls=tls", imapcheck.SecurityNone, []string{`"h,h2"`, "not allowed in a DNS name"}},
		{"a=imap://h,h2,verify-tls=tls", imapcheck.SecurityNone, []string{`"h2"`, "not a URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseBackendsWith(tt.spec, Defaults{Ports: stdPorts, Security: tt.security})
			if err == nil {
				t.Fatalf("ParseBackendsWith(%q) = %v, want error", tt.spec, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestParseBackendsRefusesCheckOptions: the old entry point cannot tell
// STARTTLS from none, so it refuses the options rather than ignore them.
func TestParseBackendsRefusesCheckOptions(t *testing.T) {
	_, err := ParseBackends("s=imap://127.0.0.1:9143,verify-tls=tls", stdPorts, false)
	if err == nil || !strings.Contains(err.Error(), "ParseBackendsWith") {
		t.Fatalf("ParseBackends with an option: %v, want a refusal naming ParseBackendsWith", err)
	}
}

func TestLoadCheckRoots(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, selfSignedPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	bs, err := ParseBackendsWith("a=h1,verify-tls=tls,verify-ca-file="+caFile+";b=h2,verify-tls=tls,verify-ca-file="+caFile+";c=h3",
		Defaults{Ports: stdPorts})
	if err != nil {
		t.Fatal(err)
	}
	if err := LoadCheckRoots(bs); err != nil {
		t.Fatalf("LoadCheckRoots: %v", err)
	}
	if bs["a"].CheckTLS.Roots == nil || bs["a"].CheckTLS.Roots != bs["b"].CheckTLS.Roots {
		t.Errorf("a and b share one file: want one pool read once, got %p and %p", bs["a"].CheckTLS.Roots, bs["b"].CheckTLS.Roots)
	}
	if bs["c"].CheckTLS.Roots != nil {
		t.Error("c names no CA file but got roots")
	}

	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	for file, want := range map[string]string{filepath.Join(dir, "missing.pem"): "no such file", notPEM: "no PEM certificate"} {
		bs, err := ParseBackendsWith("z=h,verify-tls=starttls,verify-ca-file="+file, Defaults{Ports: stdPorts})
		if err != nil {
			t.Fatal(err)
		}
		err = LoadCheckRoots(bs)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `backend "z"`) {
			t.Errorf("LoadCheckRoots(%s) = %v, want an error naming backend z and %q", file, err, want)
		}
	}
}

// selfSignedPEM returns a throwaway CA certificate, PEM encoded.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func FuzzParseBackendsWith(f *testing.F) {
	for _, s := range []string{
		"server3=imap://127.0.0.1:9143,verify-imap=server3:993,verify-tls=tls,verify-ca-file=/ca.pem",
		"m=mail.example.org,verify-tls=tls;o=10.0.0.9,verify-tls=none",
		"mx=smtp://mx:587,verify-imap=imap.example:143",
		"a=h,verify-foo=1", "a=verify-tls=tls", "a=imap://h,imaps://h,verify-imap=h",
	} {
		for _, sec := range []string{"none", "starttls", "tls"} {
			f.Add(s, sec)
		}
	}
	f.Fuzz(func(t *testing.T, spec, secName string) {
		sec, err := imapcheck.ParseSecurity(secName)
		if err != nil {
			return
		}
		bs, err := ParseBackendsWith(spec, Defaults{Ports: stdPorts, Security: sec})
		if err != nil {
			if bs != nil {
				t.Errorf("error %v with a non-nil result", err)
			}
			return
		}
		for name, b := range bs {
			if _, err := imapcheck.ParseSecurity(b.CheckTLS.Security.String()); err != nil {
				t.Errorf("backend %q: bad TLS mode %v", name, b.CheckTLS.Security)
			}
			if b.CheckTLS.CAFile != "" && b.CheckTLS.Security == imapcheck.SecurityNone {
				t.Errorf("backend %q: CA file without TLS", name)
			}
			for p, e := range b.Check {
				checkEndpoint(t, name, p, e)
			}
		}
	})
}
