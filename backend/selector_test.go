package backend

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// testBackends returns three backends named like the PHP example's.
func testBackends(t testing.TB) map[string]*Backend {
	t.Helper()
	bs, err := ParseBackends("mailhost01=192.168.1.22;mailhost02=192.168.1.33;mailhost03=mail3.example", stdPorts, false)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// nameOf returns the selected backend's name, or "" when none.
func nameOf(s Selector, user string) string {
	b, err := s.Select(context.Background(), user)
	if err != nil {
		panic(err)
	}
	if b == nil {
		return ""
	}
	return b.Name
}

func TestParseFirstLetter(t *testing.T) {
	bs := testBackends(t)
	f, err := ParseFirstLetter(" acfg=mailhost01; hz = mailhost03 ;7ä=mailhost02;", bs)
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{
		"alice":     "mailhost01",
		"Alice":     "mailhost01",
		"carol":     "mailhost01",
		"GEORGE":    "mailhost01",
		"hans":      "mailhost03",
		"Zoe":       "mailhost03",
		"7of9":      "mailhost02",
		"änne":      "mailhost02",
		"Änne":      "mailhost02",
		"bob":       "",
		"":          "",
		" alice":    "", // not trimmed: the caller passes the decoded user
		"\xffalice": "",
	} {
		if got := nameOf(f, user); got != want {
			t.Errorf("Select(%q) = %q, want %q", user, got, want)
		}
	}
}

func TestParseFirstLetterErrors(t *testing.T) {
	bs := testBackends(t)
	for _, tt := range []struct {
		spec string
		want []string
	}{
		{"", []string{"empty rule"}},
		{";;", []string{"empty rule"}},
		{"acfg", []string{`"acfg"`, "missing '='"}},
		{"=mailhost01", []string{`"=mailhost01"`, "no letters"}},
		{"ab=", []string{`"ab="`, "no backend"}},
		{"ab=mailhost09", []string{`"ab=mailhost09"`, `unknown backend "mailhost09"`}},
		{"ab=mailhost01;cb=mailhost02", []string{`"cb=mailhost02"`, `letter 'b' already given in "ab=mailhost01"`}},
		{"aA=mailhost01", []string{`"aA=mailhost01"`, "already given"}},
		{"a b=mailhost01", []string{`"a b=mailhost01"`, "white space"}},
		{"\xff=mailhost01", []string{"not valid UTF-8"}},
	} {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := ParseFirstLetter(tt.spec, bs)
			if err == nil {
				t.Fatalf("ParseFirstLetter(%q) succeeded, want error", tt.spec)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseFirstLetter(%q) error %q does not contain %q", tt.spec, err, w)
				}
			}
		})
	}
}

func TestStatic(t *testing.T) {
	bs := testBackends(t)
	s := Static{bs["mailhost02"]}
	if got := nameOf(s, "anyone"); got != "mailhost02" {
		t.Errorf("Select(anyone) = %q, want mailhost02", got)
	}
	if got := nameOf(s, ""); got != "" {
		t.Errorf("Select(\"\") = %q, want none", got)
	}
	if got := nameOf(Static{}, "anyone"); got != "" {
		t.Errorf("Static{}.Select = %q, want none", got)
	}
}

// TestChainOrder checks the auth.php order: users file beats first letter
// beats default.
func TestChainOrder(t *testing.T) {
	bs := testBackends(t)
	path := writeFile(t, "users.txt", "alice mailhost03\nAnna\n")
	uf, err := OpenUsersFile(path, bs, bs["mailhost02"], quietLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	fl, err := ParseFirstLetter("ab=mailhost01", bs)
	if err != nil {
		t.Fatal(err)
	}
	full := Chain{{RuleUsersFile, uf}, {RuleFirstLetter, fl}, {RuleDefault, Static{bs["mailhost03"]}}}
	noDefault := Chain{{RuleUsersFile, uf}, {RuleFirstLetter, fl}}
	for _, tt := range []struct {
		c    Chain
		user string
		want string
	}{
		{full, "alice", "mailhost03"}, // users file over first letter
		{full, "ANNA", "mailhost02"},  // users file line default, any case
		{full, "andy", "mailhost01"},  // first letter
		{full, "bob", "mailhost01"},   // first letter
		{full, "zed", "mailhost03"},   // default
		{full, "", ""},                // empty user selects nothing
		{noDefault, "zed", ""},        // no default: refused
		{Chain{}, "alice", ""},
	} {
		if got := nameOf(tt.c, tt.user); got != tt.want {
			t.Errorf("Select(%q) = %q, want %q", tt.user, got, tt.want)
		}
	}
	if r, _ := full.Route(context.Background(), "andy"); r.Rule != RuleFirstLetter {
		t.Errorf("andy routed by rule %q, want %q", r.Rule, RuleFirstLetter)
	}
}

// failingSelector cannot tell, as a directory that is down.
type failingSelector struct{}

func (failingSelector) Select(context.Context, string) (*Backend, error) {
	return nil, errors.New("directory down")
}

// TestChainStopsAtFailure: a rule that cannot tell stops the chain, so a
// user never lands on the default because a directory was down.
func TestChainStopsAtFailure(t *testing.T) {
	bs := testBackends(t)
	c := Chain{{"sql", failingSelector{}}, {RuleDefault, Static{bs["mailhost03"]}}}
	r, err := c.Route(context.Background(), "alice")
	if err == nil || r.Backend != nil || r.Rule != "sql" {
		t.Errorf("Route = %+v, %v; want no backend, rule sql and an error", r, err)
	}
}

func TestFoldUser(t *testing.T) {
	for _, tt := range [][2]string{
		{"Alice", "alice"},
		{"KELVIN", "\u212aelvin"}, // Kelvin sign folds with K and k
		{"ÄNNE", "änne"},
		{"a\xffB", "A\xffb"},
	} {
		if foldUser(tt[0]) != foldUser(tt[1]) {
			t.Errorf("foldUser(%q) != foldUser(%q)", tt[0], tt[1])
		}
	}
	if foldUser("a\xff") == foldUser("a\xfe") {
		t.Error("distinct invalid bytes fold together")
	}
}
