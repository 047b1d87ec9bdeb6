// Package admin is the operator's control plane: an HTTP API, JSON in
// and out, that lists and lifts the guessing limits' blocks, explains a
// login without making it, flushes a user's cached logins, drains
// backends and holds users (Server); and the command line that talks to
// it, `imapgate admin …` (Main). Every request carries a bearer token,
// and every action writes one audit log line.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// MinSecretLength is the shortest token secret accepted: the API can lift
// every block, so its token must not be guessable.
const MinSecretLength = 16

// defaultTokenName names a token given without a name in audit lines.
const defaultTokenName = "admin"

// Tokens are the admin tokens a server accepts. Each is "name:secret" or
// a bare secret; the whole string is what a client presents (Bearer), and
// the name says who in the audit line.
type Tokens struct {
	entries []token
}

type token struct {
	name   string
	digest [sha256.Size]byte
}

// ParseTokens reads IMAPGATE_ADMIN_TOKEN: one token, or several
// separated by ",". Its errors never hold a secret.
func ParseTokens(s string) (*Tokens, error) {
	t := &Tokens{}
	for i, entry := range strings.Split(s, ",") {
		name, secret, named := strings.Cut(entry, ":")
		if !named {
			name, secret = defaultTokenName, entry
		}
		switch {
		case !validName(name):
			return nil, fmt.Errorf("token %d: its name must be letters, digits, '.', '_' or '-' (name:secret)", i+1)
		case len(secret) < MinSecretLength:
			return nil, fmt.Errorf("token %d: its secret is shorter than %d characters", i+1, MinSecretLength)
		case strings.ContainsAny(secret, " \t\r\n"):
			return nil, fmt.Errorf("token %d: its secret holds white space", i+1)
		}
		t.entries = append(t.entries, token{name: name, digest: sha256.Sum256([]byte(entry))})
	}
	return t, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Errors of a request's credentials.
var (
	errNoToken    = errors.New("no bearer token")
	errWrongToken = errors.New("invalid token")
)

// check returns the name of the token the Authorization header value
// carries. Digests of fixed length are compared, every one of them, in
// constant time: neither the secret's length nor which entry matched
// shows in the time taken.
func (t *Tokens) check(authorization string) (string, error) {
	presented, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || presented == "" {
		return "", errNoToken
	}
	got := sha256.Sum256([]byte(presented))
	match := -1
	for i, e := range t.entries {
		if subtle.ConstantTimeCompare(got[:], e.digest[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", errWrongToken
	}
	return t.entries[match].name, nil
}

// ClientToken is the token a client presents, from the value of
// IMAPGATE_ADMIN_TOKEN: the first of a list.
func ClientToken(s string) string {
	first, _, _ := strings.Cut(s, ",")
	return first
}
