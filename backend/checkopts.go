package backend

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/imapgate/imapgate/imapcheck"
)

// The per-backend check options of a backend spec.
const (
	optVerifyIMAP   = "verify-imap"
	optVerifyPOP3   = "verify-pop3"
	optVerifyTLS    = "verify-tls"
	optVerifyCAFile = "verify-ca-file"
)

// checkOptions are a backend's own check settings, parsed.
type checkOptions struct {
	verify map[imapcheck.Protocol]Endpoint
	tls    CheckTLS
	// ownSecurity: the spec has verify-tls, so tls.Security is its own.
	ownSecurity bool
}

// security returns the check's TLS mode for the backend: its own, else
// the default.
func (o checkOptions) security(d Defaults) imapcheck.Security {
	if o.ownSecurity {
		return o.tls.Security
	}
	return d.Security
}

// splitOptions separates the options (key=value items) from the address
// part of a spec. An item is an option when what precedes its first '='
// is a plain word: no URL or host has one ("imap://h?x=1" has ':' and '/'
// before it). The address part comes back as it was written, commas and
// all, so that its errors read as before options existed.
func splitOptions(spec string) (string, []string) {
	if !strings.Contains(spec, "=") {
		return spec, nil
	}
	var addr, opts []string
	for item := range strings.SplitSeq(spec, ",") {
		t := strings.TrimSpace(item)
		if key, _, ok := strings.Cut(t, "="); ok && isOptionKey(strings.TrimSpace(key)) {
			opts = append(opts, t)
			continue
		}
		addr = append(addr, item)
	}
	if len(opts) == 0 {
		return spec, nil
	}
	return strings.TrimSpace(strings.Join(addr, ",")), opts
}

// isOptionKey reports whether key looks like an option name: lower-case
// letters, digits and '-'.
func isOptionKey(key string) bool {
	if key == "" {
		return false
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parseOptions parses the option items of one backend.
func parseOptions(items []string, d Defaults) (checkOptions, error) {
	o := checkOptions{verify: map[imapcheck.Protocol]Endpoint{}}
	raw := make(map[string]string)
	for _, item := range items {
		key, val, _ := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case optVerifyIMAP, optVerifyPOP3, optVerifyTLS, optVerifyCAFile:
		default:
			return o, fmt.Errorf("option %q: unknown option %q: want %s, %s, %s or %s",
				item, key, optVerifyIMAP, optVerifyPOP3, optVerifyTLS, optVerifyCAFile)
		}
		if _, dup := raw[key]; dup {
			return o, fmt.Errorf("option %q: %s given twice", item, key)
		}
		if val == "" {
			return o, fmt.Errorf("option %q: empty value", item)
		}
		raw[key] = val
	}
	if v, ok := raw[optVerifyTLS]; ok {
		sec, err := imapcheck.ParseSecurity(v)
		if err != nil {
			return o, fmt.Errorf("option %s=%s: %w", optVerifyTLS, v, err)
		}
		o.tls.Security, o.ownSecurity = sec, true
	}
	implicitTLS := o.security(d) == imapcheck.SecurityTLS
	for key, p := range map[string]imapcheck.Protocol{optVerifyIMAP: imapcheck.IMAP, optVerifyPOP3: imapcheck.POP3} {
		v, ok := raw[key]
		if !ok {
			continue
		}
		ep, err := parseVerifyAddr(v, p, d.Ports, implicitTLS)
		if err != nil {
			return o, fmt.Errorf("option %s=%s: %w", key, v, err)
		}
		o.verify[p] = ep
	}
	if v, ok := raw[optVerifyCAFile]; ok {
		if o.security(d) == imapcheck.SecurityNone {
			return o, fmt.Errorf("option %s=%s: the check's TLS is none (set verify-tls=starttls or tls, or IMAPGATE_VERIFY_TLS)", optVerifyCAFile, v)
		}
		o.tls.CAFile = v
	}
	return o, nil
}

// parseVerifyAddr parses a verify-imap/verify-pop3 value, host[:port]. The
// default port is the protocol's implicit-TLS port when the check uses
// implicit TLS, else its plain port.
func parseVerifyAddr(v string, p imapcheck.Protocol, ports Ports, implicitTLS bool) (Endpoint, error) {
	if strings.Contains(v, "://") {
		return Endpoint{}, errors.New("want host[:port], not a URL (the TLS mode is verify-tls)")
	}
	if strings.ContainsAny(v, "/?#@") {
		return Endpoint{}, errors.New("want host[:port]")
	}
	hostPart, portPart, hasPort, err := splitHostPort(v)
	if err != nil {
		return Endpoint{}, err
	}
	host, err := parseHost(hostPart)
	if err != nil {
		return Endpoint{}, err
	}
	port := ports.defaultPort(scheme{proto: p, tls: implicitTLS})
	if hasPort {
		if port, err = parsePort(portPart); err != nil {
			return Endpoint{}, err
		}
	}
	return Endpoint{host, port}, nil
}

// LoadCheckRoots reads the CA file of every backend that names one
// (verify-ca-file) into its CheckTLS.Roots, each file once. It is a step
// of its own, after parsing, so that parsing never touches the file
// system. The error names the backend and the file.
func LoadCheckRoots(backends map[string]*Backend) error {
	pools := make(map[string]*x509.CertPool)
	for _, name := range sortedNames(backends) {
		b := backends[name]
		path := b.CheckTLS.CAFile
		if path == "" {
			continue
		}
		pool, ok := pools[path]
		if !ok {
			pem, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("backend %q: %s: %w", name, optVerifyCAFile, err)
			}
			pool = x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("backend %q: %s: no PEM certificate in %s", name, optVerifyCAFile, path)
			}
			pools[path] = pool
		}
		b.CheckTLS.Roots = pool
	}
	return nil
}

// sortedNames returns the backends' names in order, so that errors about
// several backends always name the same one first.
func sortedNames(backends map[string]*Backend) []string {
	return slices.Sorted(maps.Keys(backends))
}
