package backend

import (
	"net/url"
	"strings"
)

// redactedError is an error whose text has the given secrets (a DSN
// password, a bind password) replaced, so that neither a log line nor a
// wrapping error can carry them. Drivers try not to quote passwords, but a
// password that is also part of a host name or a query must not depend on
// that.
type redactedError struct {
	err     error
	secrets []string
}

// redact wraps err so that its text never contains secret (nor its
// percent-encoded forms). It returns nil for a nil err.
func redact(err error, secret string) error {
	if err == nil {
		return nil
	}
	if secret == "" {
		return err
	}
	forms := []string{secret}
	for _, f := range []string{url.QueryEscape(secret), url.PathEscape(secret), url.UserPassword("", secret).String()[1:]} {
		if f != secret && f != "" {
			forms = append(forms, f)
		}
	}
	return &redactedError{err: err, secrets: forms}
}

func (e *redactedError) Error() string {
	s := e.err.Error()
	for _, secret := range e.secrets {
		s = strings.ReplaceAll(s, secret, "xxxxx")
	}
	return s
}

// Unwrap lets errors.Is see a context's deadline through the wrapper.
func (e *redactedError) Unwrap() error { return e.err }
