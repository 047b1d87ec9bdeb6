// Package backend describes the mail servers imapgate sends logins to and
// picks the one a user belongs to.
//
// A Backend has, per protocol, the address nginx is told to proxy to
// (Auth-Server/Auth-Port) and the address imapgate's own check logs in to.
// A Selector maps a user name to a Backend; a Chain asks its rules in order:
// by default the users file, then the first-letter rule, then the default,
// exactly as the auth.php scripts did.
package backend

import (
	"context"
	"crypto/x509"
	"net"
	"strconv"

	"github.com/imapgate/imapgate/imapcheck"
)

// Endpoint is a host and a TCP port. Host is an IP literal or a DNS name as
// the operator wrote it; Resolver turns it into the literal IP nginx needs.
type Endpoint struct {
	Host string
	Port uint16
}

// String returns the endpoint as host:port, bracketing IPv6 literals.
func (e Endpoint) String() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
}

// Backend is one mail server, or one set of ports on a host.
type Backend struct {
	// Name is the name the configuration gives the backend (mailhost01).
	Name string
	// Proxy is where nginx is sent for each protocol the backend serves.
	// A protocol missing from the map is not served by this backend.
	Proxy map[imapcheck.Protocol]Endpoint
	// Check is where imapgate logs in to verify a password, for IMAP and
	// POP3. It equals Proxy unless the check uses implicit TLS, which
	// listens on its own ports (993, 995), or the backend names its own
	// check address (verify-imap=, verify-pop3=): the Cyrus howto proxies
	// to a local TLS frontend but checks on the server itself.
	Check map[imapcheck.Protocol]Endpoint
	// CheckTLS is how the check protects its connection to this backend:
	// its own verify-tls= and verify-ca-file=, else the global settings.
	CheckTLS CheckTLS
}

// CheckTLS is how the check protects its connection to one backend.
type CheckTLS struct {
	// Security is the backend's verify-tls=, else the mode its spec was
	// parsed with (IMAPGATE_VERIFY_TLS).
	Security imapcheck.Security
	// CAFile is the PEM bundle that verifies the backend's certificate;
	// "" means IMAPGATE_VERIFY_CA_FILE (or the system roots).
	CAFile string
	// Roots holds CAFile's certificates once LoadCheckRoots has read it;
	// nil means the Verifier's roots.
	Roots *x509.CertPool
}

// Selector picks the backend a user's mail lives on.
type Selector interface {
	// Select returns the user's backend. It returns nil and no error
	// when it names none for this user, so that the next rule of a Chain
	// is asked, and an error when it cannot tell now (a directory that is
	// down, slow or failing): that is a temporary failure, and the rules
	// after it must not be asked, or the user would silently land on
	// another backend.
	Select(ctx context.Context, user string) (*Backend, error)
}
