package backend

import (
	"strings"
	"testing"
)

func TestBuildChain(t *testing.T) {
	all := map[string]Selector{
		RuleUsersFile: Static{}, RuleSQL: Static{}, RuleLDAP: Static{}, RuleFirstLetter: Static{}, RuleDefault: Static{},
	}
	only := func(names ...string) map[string]Selector {
		m := map[string]Selector{}
		for _, n := range names {
			m[n] = all[n]
		}
		return m
	}
	tests := []struct {
		order      string
		configured map[string]Selector
		want       string // rule names, or the error's text
	}{
		{"", only(RuleUsersFile, RuleFirstLetter, RuleDefault), "users-file,first-letter,default"},
		{"", all, "users-file,sql,ldap,first-letter,default"},
		{"", only(RuleLDAP, RuleDefault), "ldap,default"},
		{"sql, users-file ,ldap,default", only(RuleSQL, RuleUsersFile, RuleLDAP, RuleDefault), "sql,users-file,ldap,default"},
		{"ldap,sql", only(RuleSQL, RuleLDAP), "ldap,sql"},
		{"sql,ldap", only(RuleSQL), `rule "ldap" is not configured (IMAPGATE_LDAP_URL)`},
		{"sql", only(RuleSQL, RuleDefault), `rule "default" is configured (IMAPGATE_DEFAULT_BACKEND) but not in the list`},
		{"sql,sql", only(RuleSQL), `rule "sql" given twice`},
		{"default,sql", only(RuleSQL, RuleDefault), `rule "sql" after default`},
		{"redis", only(RuleSQL), `unknown rule "redis"`},
		{"", only(), "no rule"},
		{" , ", only(), "no rule"},
	}
	for _, tt := range tests {
		c, err := BuildChain(tt.order, tt.configured)
		var got string
		if err != nil {
			got = err.Error()
		} else {
			var names []string
			for _, r := range c {
				names = append(names, r.Name)
			}
			got = strings.Join(names, ",")
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("BuildChain(%q) = %q, want %q", tt.order, got, tt.want)
		}
	}
}
