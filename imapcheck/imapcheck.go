// Package imapcheck verifies a user's password by logging in to the user's
// real mail server, over IMAP (RFC 9051, RFC 3501) or POP3 (RFC 1939), and
// reports what the server said.
//
// It knows nothing of nginx: the caller hands it an address and credentials
// and gets back an Outcome and, when the login did not succeed, an error that
// keeps the server's reply for the log.
package imapcheck

import (
	"crypto/x509"
	"fmt"
	"net/netip"
)

// Outcome is the verdict of one verification.
type Outcome int

// The outcomes of a verification.
const (
	// OK means the server accepted the credentials.
	OK Outcome = iota
	// Rejected means the server refused the credentials
	// (NO [AUTHENTICATIONFAILED], a bare NO, -ERR [AUTH], …).
	Rejected
	// Temporary means the server could not give a verdict now: it was
	// down, timed out, failed TLS, said [UNAVAILABLE] or [SYS/TEMP], or
	// hung up.
	Temporary
	// Unsupported means the credentials cannot be checked this way, for
	// example the server offers no login method imapgate can use, or the
	// credentials contain bytes the protocol cannot carry.
	Unsupported
	// Delayed means the server greeted and was sent the credentials, then
	// held its answer past the deadline: Dovecot's auth penalty on the
	// client's address, or a tarpit. The server is up (it answers others);
	// this is a verdict withheld on one attempt, not an outage.
	Delayed
)

// String returns the outcome's name as it appears in logs.
func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Rejected:
		return "rejected"
	case Temporary:
		return "temporary"
	case Unsupported:
		return "unsupported"
	case Delayed:
		return "delayed"
	}
	return "unknown"
}

// Protocol is a mail protocol, named as nginx names it in Auth-Protocol.
// A check logs in with IMAP or POP3; SMTP is only ever proxied (nginx does
// not log in to SMTP backends) and probed.
type Protocol string

// The mail protocols.
const (
	IMAP Protocol = "imap"
	POP3 Protocol = "pop3"
	SMTP Protocol = "smtp"
)

// Security is how a check protects the connection to the server.
type Security uint8

// The ways a check can connect.
const (
	// SecurityNone connects in plain TCP.
	SecurityNone Security = iota
	// SecurityStartTLS connects in plain TCP and upgrades with IMAP
	// STARTTLS (RFC 9051 section 6.2.1) or POP3 STLS (RFC 2595).
	SecurityStartTLS
	// SecurityTLS connects with TLS from the first byte (RFC 8314).
	SecurityTLS
)

var securityNames = [...]string{SecurityNone: "none", SecurityStartTLS: "starttls", SecurityTLS: "tls"}

// String returns the name ParseSecurity reads: none, starttls or tls.
func (s Security) String() string {
	if int(s) < len(securityNames) {
		return securityNames[s]
	}
	return fmt.Sprintf("Security(%d)", s)
}

// ParseSecurity reads a Security by its name: none, starttls or tls.
func ParseSecurity(name string) (Security, error) {
	for s, n := range securityNames {
		if n == name {
			return Security(s), nil
		}
	}
	return 0, fmt.Errorf("%q is not none, starttls or tls", name)
}

// Request is one verification: who logs in, where, and how.
type Request struct {
	// Protocol is the protocol to log in with.
	Protocol Protocol
	// Address is the server's host:port.
	Address string
	// ServerName is the name the server's certificate must carry; empty
	// means the host part of Address.
	ServerName string
	// Security is how the check protects the connection (each backend
	// has its own: IMAPGATE_VERIFY_TLS or its verify-tls=).
	Security Security
	// Roots verify the server's certificate; nil means the Verifier's
	// TLSConfig (IMAPGATE_VERIFY_CA_FILE, else the system roots).
	Roots *x509.CertPool
	// User and Password are the client's credentials, already decoded.
	User     string
	Password string
	// ClientIP is the mail client's address, told to the server when the
	// Verifier forwards it; the zero Addr tells nothing.
	ClientIP netip.Addr
}
