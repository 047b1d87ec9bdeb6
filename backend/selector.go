package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Static is a Selector that gives every user the same backend: the default
// backend (IMAPGATE_DEFAULT_BACKEND) at the end of a Chain.
type Static struct {
	// Backend is the backend every non-empty user gets.
	Backend *Backend
}

// Select returns s.Backend for any non-empty user.
func (s Static) Select(_ context.Context, user string) (*Backend, error) {
	if user == "" {
		return nil, nil
	}
	return s.Backend, nil
}

// The names of the rules a Chain is built from, as the log and the
// metrics show them.
const (
	RuleUsersFile   = "users-file"
	RuleFirstLetter = "first-letter"
	RuleDefault     = "default"
)

// Rule is one named selector of a Chain.
type Rule struct {
	// Name says which rule routed a login, in the log and the metrics.
	Name     string
	Selector Selector
}

// Route is where a Chain sends a user, and the rule that said so.
type Route struct {
	// Backend is nil when no rule names one.
	Backend *Backend
	// Rule is the name of the rule that named Backend, or that failed.
	Rule string
}

// Chain asks its rules in order, users file, then first letter, then
// default by default, as the auth.php scripts did, and takes the first
// answer.
type Chain []Rule

// Route returns the backend of the first rule that names one. A rule
// that fails stops the chain with its error (and its name in the Route):
// asking the next rules could send the user to another backend.
func (c Chain) Route(ctx context.Context, user string) (Route, error) {
	if user == "" {
		return Route{}, nil
	}
	for _, r := range c {
		b, err := r.Selector.Select(ctx, user)
		if err != nil {
			return Route{Rule: r.Name}, fmt.Errorf("rule %s: %w", r.Name, err)
		}
		if b != nil {
			return Route{Backend: b, Rule: r.Name}, nil
		}
	}
	return Route{}, nil
}

// Select returns the backend Route finds, so that a Chain is a Selector
// too.
func (c Chain) Select(ctx context.Context, user string) (*Backend, error) {
	r, err := c.Route(ctx, user)
	return r.Backend, err
}

// FirstLetter is a Selector that picks a backend by the first character of
// the user name, compared case-insensitively (IMAPGATE_FIRST_LETTER; the
// PHP example's rule). Build it with ParseFirstLetter.
type FirstLetter struct {
	// byRune maps a case-folded rune (see foldRune) to its backend.
	byRune map[rune]*Backend
}

// ParseFirstLetter parses a first-letter rule: items separated by ';', each
// letters=backend, as in "acfg=mailhost01;hz=mailhost03". A letter is any
// character (digits and non-ASCII letters too). A letter given twice, in
// any case, and a backend not in backends are errors. Whitespace around
// items is ignored, and so are empty items.
func ParseFirstLetter(spec string, backends map[string]*Backend) (FirstLetter, error) {
	f := FirstLetter{byRune: make(map[rune]*Backend)}
	// The first item naming each letter, for the duplicate message.
	owner := make(map[rune]string)
	for item := range strings.SplitSeq(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		letters, name, ok := strings.Cut(item, "=")
		if !ok {
			return FirstLetter{}, fmt.Errorf("first letter: item %q: missing '=': want letters=backend", item)
		}
		letters, name = strings.TrimSpace(letters), strings.TrimSpace(name)
		if letters == "" {
			return FirstLetter{}, fmt.Errorf("first letter: item %q: no letters before '='", item)
		}
		if name == "" {
			return FirstLetter{}, fmt.Errorf("first letter: item %q: no backend after '='", item)
		}
		b, known := backends[name]
		if !known {
			return FirstLetter{}, fmt.Errorf("first letter: item %q: unknown backend %q", item, name)
		}
		if !utf8.ValidString(letters) {
			return FirstLetter{}, fmt.Errorf("first letter: item %q: letters are not valid UTF-8", item)
		}
		for _, r := range letters {
			if unicode.IsSpace(r) {
				return FirstLetter{}, fmt.Errorf("first letter: item %q: white space among the letters", item)
			}
			key := foldRune(r)
			if prev, dup := owner[key]; dup {
				return FirstLetter{}, fmt.Errorf("first letter: item %q: letter %q already given in %q", item, r, prev)
			}
			owner[key] = item
			f.byRune[key] = b
		}
	}
	if len(f.byRune) == 0 {
		return FirstLetter{}, errors.New("first letter: empty rule: want letters=backend separated by ';'")
	}
	return f, nil
}

// Select returns the backend for the first character of user.
func (f FirstLetter) Select(_ context.Context, user string) (*Backend, error) {
	r, size := utf8.DecodeRuneInString(user)
	if size == 0 || r == utf8.RuneError && size == 1 {
		// Empty, or an invalid byte: no letter to match.
		return nil, nil
	}
	return f.byRune[foldRune(r)], nil
}

// foldRune returns the representative of r's case-folding orbit (the
// smallest rune in it), so that runes equal under simple Unicode case
// folding (a, A; k, K, and the Kelvin sign) share one key.
func foldRune(r rune) rune {
	lowest := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		lowest = min(lowest, f)
	}
	return lowest
}

// foldUser returns the key a user name is stored and looked up under:
// each rune replaced by foldRune. Invalid UTF-8 bytes are kept as they are
// rather than becoming U+FFFD, so that distinct invalid names stay
// distinct. Dovecot's default auth_username_format %Lu lowercases names,
// so users differing only in case are one user.
func foldUser(user string) string {
	return string(appendFolded(make([]byte, 0, len(user)), user))
}
