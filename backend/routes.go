package backend

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// DefaultRouteOrder is the order of the rules when IMAPGATE_ROUTES is
// unset: the auth.php scripts' order (users file, first letter,
// default) with the directories after the users file, so that a users
// file can still override where a directory sends someone.
var DefaultRouteOrder = []string{RuleUsersFile, RuleSQL, RuleLDAP, RuleFirstLetter, RuleDefault}

// BuildChain puts the configured rules (by name: RuleUsersFile, RuleSQL,
// RuleLDAP, RuleFirstLetter, RuleDefault) in the order IMAPGATE_ROUTES
// gives, a ','-separated list of rule names; an empty order means
// DefaultRouteOrder, keeping only the configured rules. A named rule that
// is not configured, a configured rule left out, a rule named twice and
// rules after default (which answers for everyone) are errors.
func BuildChain(order string, configured map[string]Selector) (Chain, error) {
	for name := range configured {
		if !slices.Contains(DefaultRouteOrder, name) {
			return nil, fmt.Errorf("routes: unknown rule %q", name)
		}
	}
	var names []string
	if strings.TrimSpace(order) == "" {
		for _, name := range DefaultRouteOrder {
			if configured[name] != nil {
				names = append(names, name)
			}
		}
	} else {
		for item := range strings.SplitSeq(order, ",") {
			if item = strings.TrimSpace(item); item != "" {
				names = append(names, item)
			}
		}
	}
	chain := make(Chain, 0, len(names))
	for i, name := range names {
		if !slices.Contains(DefaultRouteOrder, name) {
			return nil, fmt.Errorf("routes: unknown rule %q: want %s", name, strings.Join(DefaultRouteOrder, ", "))
		}
		if slices.Contains(names[:i], name) {
			return nil, fmt.Errorf("routes: rule %q given twice", name)
		}
		sel := configured[name]
		if sel == nil {
			return nil, fmt.Errorf("routes: rule %q is not configured (%s)", name, ruleSettings[name])
		}
		if i > 0 && names[i-1] == RuleDefault {
			return nil, fmt.Errorf("routes: rule %q after default: default answers for every user, so it must come last", name)
		}
		chain = append(chain, Rule{Name: name, Selector: sel})
	}
	for _, name := range DefaultRouteOrder {
		if configured[name] != nil && !slices.Contains(names, name) {
			return nil, fmt.Errorf("routes: rule %q is configured (%s) but not in the list", name, ruleSettings[name])
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("routes: no rule selects a backend")
	}
	return chain, nil
}

// ruleSettings names the settings that configure each rule, for errors.
var ruleSettings = map[string]string{
	RuleUsersFile:   "IMAPGATE_USERS_FILE",
	RuleSQL:         "IMAPGATE_SQL_URL",
	RuleLDAP:        "IMAPGATE_LDAP_URL",
	RuleFirstLetter: "IMAPGATE_FIRST_LETTER",
	RuleDefault:     "IMAPGATE_DEFAULT_BACKEND",
}
