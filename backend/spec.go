package backend

import (
	"github.com/imapgate/imapgate/imapcheck"

	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Ports are the default ports of a host-only backend spec, and of a URL
// that names no port. A zero field means the protocol's well-known port.
type Ports struct {
	// IMAP, POP3 and SMTP are the ports nginx is sent to
	// (IMAPGATE_PORT_IMAP, _POP3, _SMTP; 143, 110, 25).
	IMAP, POP3, SMTP uint16
	// IMAPS and POP3S are the ports the password check connects to when it
	// uses implicit TLS (993, 995).
	IMAPS, POP3S uint16
}

// DefaultPorts are the well-known ports, used for zero fields of Ports.
var DefaultPorts = Ports{IMAP: 143, POP3: 110, SMTP: 25, IMAPS: 993, POP3S: 995}

// withDefaults returns p with its zero fields set from DefaultPorts.
func (p Ports) withDefaults() Ports {
	set := func(v *uint16, d uint16) {
		if *v == 0 {
			*v = d
		}
	}
	set(&p.IMAP, DefaultPorts.IMAP)
	set(&p.POP3, DefaultPorts.POP3)
	set(&p.SMTP, DefaultPorts.SMTP)
	set(&p.IMAPS, DefaultPorts.IMAPS)
	set(&p.POP3S, DefaultPorts.POP3S)
	return p
}

// scheme is what a URL's scheme in a backend spec stands for: the protocol,
// and whether it names the implicit-TLS check endpoint rather than the
// address nginx proxies to.
type scheme struct {
	proto imapcheck.Protocol
	tls   bool
}

// schemes are the URL schemes a backend spec accepts.
var schemes = map[string]scheme{
	"imap":  {imapcheck.IMAP, false},
	"pop3":  {imapcheck.POP3, false},
	"smtp":  {imapcheck.SMTP, false},
	"imaps": {imapcheck.IMAP, true},
	"pop3s": {imapcheck.POP3, true},
}

// defaultPort is the port of a URL with this scheme that names none.
func (p Ports) defaultPort(s scheme) uint16 {
	switch {
	case s.proto == imapcheck.IMAP && s.tls:
		return p.IMAPS
	case s.proto == imapcheck.POP3 && s.tls:
		return p.POP3S
	case s.proto == imapcheck.IMAP:
		return p.IMAP
	case s.proto == imapcheck.POP3:
		return p.POP3
	default:
		return p.SMTP
	}
}

// Defaults are what a backend spec leaves to the global settings.
type Defaults struct {
	// Ports are the ports of host-only specs and of URLs that name none.
	Ports Ports
	// Security is the check's TLS mode (IMAPGATE_VERIFY_TLS) for the
	// backends whose spec has no verify-tls option.
	Security imapcheck.Security
}

// ParseBackends parses the backend list as ParseBackendsWith does, with
// the check's TLS mode told only as implicit TLS or not. It refuses the
// per-backend check options, which need the mode itself.
//
// Deprecated: use ParseBackendsWith.
func ParseBackends(spec string, ports Ports, implicitTLS bool) (map[string]*Backend, error) {
	d := Defaults{Ports: ports, Security: imapcheck.SecurityNone}
	if implicitTLS {
		d.Security = imapcheck.SecurityTLS
	}
	return parseBackends(spec, d, false)
}

// ParseBackendsWith parses the backend list (IMAPGATE_BACKENDS): items
// separated by ';', each name=spec. The spec is either a host (an IPv4
// literal, an IPv6 literal with or without brackets, or a DNS name) served
// on the default ports for IMAP, POP3 and SMTP, or a ','-separated list of
// URLs imap://host:port, pop3://host:port and smtp://host:port, plus
// imaps://host:port and pop3s://host:port for the implicit-TLS check
// endpoints. A URL without a port uses the default port of its scheme.
// In URL form, a protocol not listed is not served by the backend.
//
// Check holds IMAP and POP3. When the check's TLS mode is not tls it
// equals Proxy and imaps/pop3s URLs are accepted but unused, so that
// switching the check's TLS mode needs no change to the backend list.
// When it is tls it is the imaps/pop3s URL if given, else the proxied host
// on the IMAPS or POP3S port.
//
// Either form may be followed by ','-separated options that set the
// backend's own check, for a backend whose check address or TLS differs
// from the others' (the Cyrus howto's server3, proxied to a local TLS
// frontend and checked on the server itself over TLS):
//
//	verify-imap=host[:port]  where the IMAP check logs in
//	verify-pop3=host[:port]  where the POP3 check logs in
//	verify-tls=none|starttls|tls  the check's TLS mode (IMAPGATE_VERIFY_TLS)
//	verify-ca-file=path      CA bundle for its certificate (IMAPGATE_VERIFY_CA_FILE)
//
// as in "server3=imap://127.0.0.1:9143,verify-imap=server3:993,verify-tls=tls".
// A verify address without a port uses the IMAPS/POP3S port when the
// backend's mode is tls, else the IMAP/POP3 port. The options go to
// Backend.CheckTLS; LoadCheckRoots reads the CA files.
//
// Whitespace around items is ignored, and so are empty items (a trailing
// ';'). Every other mistake is an error that quotes the offending item:
// a configuration typo must stop the service, not send users elsewhere.
// IP literals are stored in canonical form (IPv4-mapped IPv6 unmapped).
func ParseBackendsWith(spec string, d Defaults) (map[string]*Backend, error) {
	return parseBackends(spec, d, true)
}

// parseBackends parses the list; options says whether the per-backend
// check options are allowed.
func parseBackends(spec string, d Defaults, options bool) (map[string]*Backend, error) {
	d.Ports = d.Ports.withDefaults()
	backends := make(map[string]*Backend)
	for item := range strings.SplitSeq(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		b, err := parseBackend(item, d, options)
		if err != nil {
			return nil, fmt.Errorf("backends: item %q: %w", item, err)
		}
		if _, dup := backends[b.Name]; dup {
			return nil, fmt.Errorf("backends: item %q: duplicate backend name %q", item, b.Name)
		}
		backends[b.Name] = b
	}
	if len(backends) == 0 {
		return nil, errors.New("backends: empty list: want name=host or name=imap://host:port,... separated by ';'")
	}
	return backends, nil
}

// parseBackend parses one name=spec item.
func parseBackend(item string, d Defaults, allowOptions bool) (*Backend, error) {
	name, spec, ok := strings.Cut(item, "=")
	if !ok {
		return nil, errors.New("missing '=': want name=spec")
	}
	name, spec = strings.TrimSpace(name), strings.TrimSpace(spec)
	if err := validName(name); err != nil {
		return nil, err
	}
	if spec == "" {
		return nil, fmt.Errorf("backend %q: empty spec: want a host or a list of URLs", name)
	}
	spec, rawOpts := splitOptions(spec)
	if len(rawOpts) > 0 && !allowOptions {
		return nil, fmt.Errorf("backend %q: option %q: per-backend check options need ParseBackendsWith", name, rawOpts[0])
	}
	opts, err := parseOptions(rawOpts, d)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", name, err)
	}
	if spec == "" {
		return nil, fmt.Errorf("backend %q: no address before the options: want a host or a list of URLs", name)
	}
	b := &Backend{
		Name:     name,
		Proxy:    make(map[imapcheck.Protocol]Endpoint),
		Check:    make(map[imapcheck.Protocol]Endpoint),
		CheckTLS: opts.tls,
	}
	b.CheckTLS.Security = opts.security(d)
	implicitTLS := opts.security(d) == imapcheck.SecurityTLS
	if !strings.Contains(spec, "://") {
		host, err := parseHost(spec)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
		b.Proxy[imapcheck.IMAP] = Endpoint{host, d.Ports.IMAP}
		b.Proxy[imapcheck.POP3] = Endpoint{host, d.Ports.POP3}
		b.Proxy[imapcheck.SMTP] = Endpoint{host, d.Ports.SMTP}
		b.fillCheck(nil, opts.verify, d.Ports, implicitTLS)
		return b, nil
	}

	tlsCheck, err := b.parseURLs(spec, d.Ports, opts)
	if err != nil {
		return nil, err
	}
	b.fillCheck(tlsCheck, opts.verify, d.Ports, implicitTLS)
	return b, nil
}

// parseURLs parses the URL form of a spec into b.Proxy, and returns the
// implicit-TLS check URLs (imaps://, pop3s://).
func (b *Backend) parseURLs(spec string, ports Ports, opts checkOptions) (map[imapcheck.Protocol]Endpoint, error) {
	tlsCheck := make(map[imapcheck.Protocol]Endpoint)
	seen := make(map[string]bool)
	for u := range strings.SplitSeq(spec, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		s, schemeName, ep, err := parseURL(u, ports)
		if err != nil {
			return nil, fmt.Errorf("backend %q: URL %q: %w", b.Name, u, err)
		}
		if seen[schemeName] {
			return nil, fmt.Errorf("backend %q: URL %q: scheme %s given twice", b.Name, u, schemeName)
		}
		seen[schemeName] = true
		if !s.tls {
			b.Proxy[s.proto] = ep
			continue
		}
		if _, both := opts.verify[s.proto]; both {
			return nil, fmt.Errorf("backend %q: URL %q: verify-%s names the check address already; give one of them", b.Name, u, s.proto)
		}
		tlsCheck[s.proto] = ep
	}
	if len(b.Proxy) == 0 {
		// imaps:// and pop3s:// name only where the check connects.
		return nil, fmt.Errorf("backend %q: no proxied protocol: list at least one of imap://, pop3://, smtp://", b.Name)
	}
	return tlsCheck, nil
}

// fillCheck sets b.Check from b.Proxy, the implicit-TLS URLs (imaps://,
// pop3s://, used only when implicitTLS) and the verify-imap/verify-pop3
// options (used in every TLS mode).
func (b *Backend) fillCheck(tlsURLs, verify map[imapcheck.Protocol]Endpoint, ports Ports, implicitTLS bool) {
	for _, p := range []imapcheck.Protocol{imapcheck.IMAP, imapcheck.POP3} {
		proxy, served := b.Proxy[p]
		if ep, ok := verify[p]; ok {
			b.Check[p] = ep
			continue
		}
		switch {
		case !implicitTLS:
			if served {
				b.Check[p] = proxy
			}
		case tlsURLs[p] != Endpoint{}:
			b.Check[p] = tlsURLs[p]
		case served:
			port := ports.IMAPS
			if p == imapcheck.POP3 {
				port = ports.POP3S
			}
			b.Check[p] = Endpoint{proxy.Host, port}
		}
	}
}

// validName reports whether name may name a backend. The character set is
// narrow so that names survive every place they are written: environment
// variables, the users file, log lines and metric labels.
func validName(name string) error {
	if name == "" {
		return errors.New("missing backend name before '='")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("bad backend name %q: allowed are letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// parseURL parses scheme://host[:port]. It is parsed by hand rather than
// with net/url so that every deviation gets its own message and nothing
// (a path, a user name) is quietly dropped.
func parseURL(u string, ports Ports) (scheme, string, Endpoint, error) {
	name, rest, ok := strings.Cut(u, "://")
	if !ok {
		return scheme{}, "", Endpoint{}, errors.New("not a URL: want scheme://host:port")
	}
	name = strings.ToLower(name)
	s, known := schemes[name]
	if !known {
		return scheme{}, "", Endpoint{}, fmt.Errorf("unknown scheme %q: want imap, pop3, smtp, imaps or pop3s", name)
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		return scheme{}, "", Endpoint{}, errors.New("path, query or fragment not allowed: want scheme://host:port")
	}
	if strings.Contains(rest, "@") {
		return scheme{}, "", Endpoint{}, errors.New("user info not allowed: credentials are the client's own")
	}
	hostPart, portPart, hasPort, err := splitHostPort(rest)
	if err != nil {
		return scheme{}, "", Endpoint{}, err
	}
	host, err := parseHost(hostPart)
	if err != nil {
		return scheme{}, "", Endpoint{}, err
	}
	port := ports.defaultPort(s)
	if hasPort {
		if port, err = parsePort(portPart); err != nil {
			return scheme{}, "", Endpoint{}, err
		}
	}
	return s, name, Endpoint{host, port}, nil
}

// splitHostPort splits host[:port], where host may be a bracketed IPv6
// literal. Unlike net.SplitHostPort the port is optional, and an
// unbracketed IPv6 literal is taken whole as a host without a port.
func splitHostPort(s string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, errors.New("missing ']' after IPv6 address")
		}
		host, after := s[:end+1], s[end+1:]
		if after == "" {
			return host, "", false, nil
		}
		if after[0] != ':' {
			return "", "", false, fmt.Errorf("unexpected %q after IPv6 address", after)
		}
		return host, after[1:], true, nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", false, nil
	case 1:
		host, port, _ = strings.Cut(s, ":")
		return host, port, true, nil
	default:
		return s, "", false, nil
	}
}

// parsePort parses a TCP port, 1 to 65535.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q: want 1 to 65535", s)
	}
	return uint16(n), nil
}

// parseHost checks a host: an IP literal (IPv6 with or without brackets)
// or a DNS name. IP literals come back canonical and without brackets.
func parseHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty host")
	}
	bracketed := strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]")
	lit := h
	if bracketed {
		lit = h[1 : len(h)-1]
	}
	if addr, err := netip.ParseAddr(lit); err == nil {
		if addr.Zone() != "" {
			// nginx parses Auth-Server with ngx_inet_addr/ngx_inet6_addr,
			// which know no zones.
			return "", fmt.Errorf("host %q: IPv6 zones are not supported", h)
		}
		if bracketed && !addr.Is6() {
			return "", fmt.Errorf("host %q: brackets are for IPv6 addresses only", h)
		}
		return addr.Unmap().String(), nil
	}
	if bracketed || strings.Contains(h, ":") {
		if !bracketed && strings.Count(h, ":") == 1 {
			return "", fmt.Errorf("host %q: a bare host takes no port; use imap://host:port,... to set ports", h)
		}
		return "", fmt.Errorf("host %q: not a valid IP address", h)
	}
	if err := validDNSName(h); err != nil {
		return "", fmt.Errorf("host %q: %w", h, err)
	}
	return h, nil
}

// validDNSName checks the syntax of a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (seen in internal names), at most 63 bytes
// each and 253 in all, with an optional trailing dot.
func validDNSName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return errors.New("bad DNS name length")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label in DNS name")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("DNS label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed in a DNS name", c)
			}
		}
	}
	return nil
}
