package backend

import (
	"github.com/imapgate/imapgate/imapcheck"

	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ep is shorthand for an Endpoint in test tables.
func ep(host string, port uint16) Endpoint { return Endpoint{host, port} }

// stdPorts are the ports of the DESIGN's defaults.
var stdPorts = Ports{IMAP: 143, POP3: 110, SMTP: 25, IMAPS: 993, POP3S: 995}

// eps builds an endpoint map.
type eps = map[imapcheck.Protocol]Endpoint

func TestParseBackends(t *testing.T) {
	tests := []struct {
		name        string
		spec        string
		ports       Ports
		implicitTLS bool
		want        map[string]*Backend
	}{
		{
			name:  "host-only IPv4, PHP example",
			spec:  "mailhost01=192.168.1.22;mailhost02=192.168.1.33",
			ports: stdPorts,
			want: map[string]*Backend{
				"mailhost01": {
					Name:  "mailhost01",
					Proxy: eps{imapcheck.IMAP: ep("192.168.1.22", 143), imapcheck.POP3: ep("192.168.1.22", 110), imapcheck.SMTP: ep("192.168.1.22", 25)},
					Check: eps{imapcheck.IMAP: ep("192.168.1.22", 143), imapcheck.POP3: ep("192.168.1.22", 110)},
				},
				"mailhost02": {
					Name:  "mailhost02",
					Proxy: eps{imapcheck.IMAP: ep("192.168.1.33", 143), imapcheck.POP3: ep("192.168.1.33", 110), imapcheck.SMTP: ep("192.168.1.33", 25)},
					Check: eps{imapcheck.IMAP: ep("192.168.1.33", 143), imapcheck.POP3: ep("192.168.1.33", 110)},
				},
			},
		},
		{
			name:  "host-only IPv6 bare and bracketed, zero ports mean well-known",
			spec:  " a = 2001:db8::1 ; b=[2001:DB8::2];",
			ports: Ports{},
			want: map[string]*Backend{
				"a": {
					Name:  "a",
					Proxy: eps{imapcheck.IMAP: ep("2001:db8::1", 143), imapcheck.POP3: ep("2001:db8::1", 110), imapcheck.SMTP: ep("2001:db8::1", 25)},
					Check: eps{imapcheck.IMAP: ep("2001:db8::1", 143), imapcheck.POP3: ep("2001:db8::1", 110)},
				},
				"b": {
					Name:  "b",
					Proxy: eps{imapcheck.IMAP: ep("2001:db8::2", 143), imapcheck.POP3: ep("2001:db8::2", 110), imapcheck.SMTP: ep("2001:db8::2", 25)},
					Check: eps{imapcheck.IMAP: ep("2001:db8::2", 143), imapcheck.POP3: ep("2001:db8::2", 110)},
				},
			},
		},
		{
			name:  "host-only DNS name, custom ports, 4in6 unmapped",
			spec:  "m.x_1=mail.example.org.;v4=::ffff:10.0.0.1",
			ports: Ports{IMAP: 1143, POP3: 1110, SMTP: 1025},
			want: map[string]*Backend{
				"m.x_1": {
					Name:  "m.x_1",
					Proxy: eps{imapcheck.IMAP: ep("mail.example.org.", 1143), imapcheck.POP3: ep("mail.example.org.", 1110), imapcheck.SMTP: ep("mail.example.org.", 1025)},
					Check: eps{imapcheck.IMAP: ep("mail.example.org.", 1143), imapcheck.POP3: ep("mail.example.org.", 1110)},
				},
				"v4": {
					Name:  "v4",
					Proxy: eps{imapcheck.IMAP: ep("10.0.0.1", 1143), imapcheck.POP3: ep("10.0.0.1", 1110), imapcheck.SMTP: ep("10.0.0.1", 1025)},
					Check: eps{imapcheck.IMAP: ep("10.0.0.1", 1143), imapcheck.POP3: ep("10.0.0.1", 1110)},
				},
			},
		},
		{
			name:  "host-only with implicit TLS check",
			spec:  "m=mail.example.org",
			ports: stdPorts,
			want: map[string]*Backend{
				"m": {
					Name:  "m",
					Proxy: eps{imapcheck.IMAP: ep("mail.example.org", 143), imapcheck.POP3: ep("mail.example.org", 110), imapcheck.SMTP: ep("mail.example.org", 25)},
					Check: eps{imapcheck.IMAP: ep("mail.example.org", 993), imapcheck.POP3: ep("mail.example.org", 995)},
				},
			},
			implicitTLS: true,
		},
		{
			name:  "URL form, Cyrus howto",
			spec:  "server3=imap://127.0.0.1:9143,pop3://127.0.0.1:9110;server4=imap://127.0.0.1:9144",
			ports: stdPorts,
			want: map[string]*Backend{
				"server3": {
					Name:  "server3",
					Proxy: eps{imapcheck.IMAP: ep("127.0.0.1", 9143), imapcheck.POP3: ep("127.0.0.1", 9110)},
					Check: eps{imapcheck.IMAP: ep("127.0.0.1", 9143), imapcheck.POP3: ep("127.0.0.1", 9110)},
				},
				"server4": {
					Name:  "server4",
					Proxy: eps{imapcheck.IMAP: ep("127.0.0.1", 9144)},
					Check: eps{imapcheck.IMAP: ep("127.0.0.1", 9144)},
				},
			},
		},
		{
			name:  "URL form, default ports, IPv6, upper-case scheme, empty items",
			spec:  "s=IMAP://[::1], smtp://mx.example ,,pop3://[::1]:1110,",
			ports: Ports{IMAP: 1143, SMTP: 2525},
			want: map[string]*Backend{
				"s": {
					Name:  "s",
					Proxy: eps{imapcheck.IMAP: ep("::1", 1143), imapcheck.POP3: ep("::1", 1110), imapcheck.SMTP: ep("mx.example", 2525)},
					Check: eps{imapcheck.IMAP: ep("::1", 1143), imapcheck.POP3: ep("::1", 1110)},
				},
			},
		},
		{
			name:        "URL form, implicit TLS: explicit imaps, derived pop3s",
			spec:        "s=imap://10.0.0.1:143,pop3://10.0.0.1,imaps://10.0.0.2:9993",
			ports:       stdPorts,
			implicitTLS: true,
			want: map[string]*Backend{
				"s": {
					Name:  "s",
					Proxy: eps{imapcheck.IMAP: ep("10.0.0.1", 143), imapcheck.POP3: ep("10.0.0.1", 110)},
					Check: eps{imapcheck.IMAP: ep("10.0.0.2", 9993), imapcheck.POP3: ep("10.0.0.1", 995)},
				},
			},
		},
		{
			name:        "URL form, implicit TLS, imapcheck.SMTP-only proxy checked over imaps",
			spec:        "s=smtp://mx:587,imaps://imap.example",
			ports:       stdPorts,
			implicitTLS: true,
			want: map[string]*Backend{
				"s": {
					Name:  "s",
					Proxy: eps{imapcheck.SMTP: ep("mx", 587)},
					Check: eps{imapcheck.IMAP: ep("imap.example", 993)},
				},
			},
		},
		{
			name:  "URL form, no implicit TLS: imaps accepted but unused",
			spec:  "s=imap://h:143,imaps://h:993",
			ports: stdPorts,
			want: map[string]*Backend{
				"s": {
					Name:  "s",
					Proxy: eps{imapcheck.IMAP: ep("h", 143)},
					Check: eps{imapcheck.IMAP: ep("h", 143)},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBackends(tt.spec, tt.ports, tt.implicitTLS)
			if err != nil {
				t.Fatalf("ParseBackends(%q): %v", tt.spec, err)
			}
			if tt.implicitTLS {
				// Every backend's check is over TLS then.
				for _, b := range tt.want {
					b.CheckTLS.Security = imapcheck.SecurityTLS
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				for _, name := range slices.Sorted(maps.Keys(got)) {
					t.Logf("got %s: %+v", name, *got[name])
				}
				t.Errorf("ParseBackends(%q) differs from want", tt.spec)
			}
		})
	}
}

func TestParseBackendsErrors(t *testing.T) {
	tests := []struct {
		spec string
		// want are substrings the message must contain: what is wrong
		// and the offending item.
		want []string
	}{
		{"", []string{"empty list"}},
		{" ; ;", []string{"empty list"}},
		{"mailhost01", []string{`"mailhost01"`, "missing '='"}},
		{"=10.0.0.1", []string{`"=10.0.0.1"`, "missing backend name"}},
		{"a=10.0.0.1;a=10.0.0.2", []string{`"a=10.0.0.2"`, "duplicate backend name"}},
		{"mail host=10.0.0.1", []string{`"mail host=10.0.0.1"`, "bad backend name"}},
		{"m/1=10.0.0.1", []string{`"m/1=10.0.0.1"`, "bad backend name"}},
		{"a=", []string{`"a="`, "empty spec"}},
		{"a=imaps4://h:1", []string{`"imaps4://h:1"`, "unknown scheme"}},
		{"a=http://h", []string{`"http://h"`, "unknown scheme"}},
		{"a=imap://h:0", []string{`"imap://h:0"`, "bad port", `"0"`}},
		{"a=imap://h:65536", []string{`"imap://h:65536"`, "bad port"}},
		{"a=imap://h:imap", []string{`"imap://h:imap"`, "bad port"}},
		{"a=imap://h:", []string{`"imap://h:"`, "bad port"}},
		{"a=imap://h:-1", []string{"bad port"}},
		{"a=imap://[::1]:99999", []string{"bad port"}},
		{"a=imap://h:143/INBOX", []string{`"imap://h:143/INBOX"`, "path"}},
		{"a=imap://h:143?x=1", []string{`"imap://h:143?x=1"`, "query"}},
		{"a=imap://h/", []string{"path"}},
		{"a=imap://user@h:143", []string{`"imap://user@h:143"`, "user info"}},
		{"a=imap://h:1,imap://h:2", []string{`"imap://h:2"`, "imap given twice"}},
		{"a=imap://h:1,IMAP://h:2", []string{"imap given twice"}},
		{"a=imap://:143", []string{`"imap://:143"`, "empty host"}},
		{"a=imap://", []string{"empty host"}},
		{"a=imap://[]:143", []string{"not a valid IP"}},
		{"a=imap://[::1:143", []string{"missing ']'"}},
		{"a=imap://[::1]x", []string{"after IPv6"}},
		{"a=imap://[10.0.0.1]:143", []string{"brackets are for IPv6"}},
		{"a=imap://h:143,h2", []string{`"h2"`, "not a URL"}},
		{"a=imap://h:143,imap:h2", []string{`"imap:h2"`, "not a URL"}},
		{"a=,", []string{`"a=,"`, "not allowed in a DNS name"}},
		{"a=://h", []string{`"://h"`, "unknown scheme"}},
		{"a=imaps://h,pop3s://h", []string{`"a=imaps://h,pop3s://h"`, "no proxied protocol"}},
		{"a=10.0.0.1:143", []string{`"10.0.0.1:143"`, "takes no port"}},
		{"a=mail.example.org:143", []string{"takes no port"}},
		{"a=fe80::1%eth0", []string{`"fe80::1%eth0"`, "zones"}},
		{"a=mail example", []string{`"mail example"`, "not allowed in a DNS name"}},
		{"a=-mail.example", []string{"starts or ends with '-'"}},
		{"a=mail..example", []string{"empty or over-long label"}},
		{"a=" + strings.Repeat("x", 64), []string{"over-long label"}},
		{"a=1:2:3", []string{`"1:2:3"`, "not a valid IP"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseBackends(tt.spec, stdPorts, false)
			if err == nil {
				t.Fatalf("ParseBackends(%q) = %v, want error", tt.spec, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseBackends(%q) error %q does not contain %q", tt.spec, err, w)
				}
			}
		})
	}
}

func TestEndpointString(t *testing.T) {
	for _, tt := range []struct {
		e    Endpoint
		want string
	}{
		{ep("10.0.0.1", 143), "10.0.0.1:143"},
		{ep("::1", 993), "[::1]:993"},
		{ep("mail.example", 25), "mail.example:25"},
	} {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.e, got, tt.want)
		}
	}
}
