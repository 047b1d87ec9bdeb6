// Package backend describes the mail servers imapgate sends logins to and
// picks the one a user belongs to.
//
// A Backend has, per protocol, the address nginx is told to proxy to
// (Auth-Server/Auth-Port) and the address imapgate's own check logs in to.
// A Selector maps a user name to a Backend: the users file, then the
// first-letter rule, then the default, exactly as the auth.php scripts did.
package backend

import (
	"net"
	"strconv"
)

// Protocol is a mail protocol nginx's mail proxy speaks, as sent in the
// Auth-Protocol header.
type Protocol string

// The protocols nginx proxies.
const (
	IMAP Protocol = "imap"
	POP3 Protocol = "pop3"
	SMTP Protocol = "smtp"
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
	Proxy map[Protocol]Endpoint
	// Check is where imapgate logs in to verify a password, for IMAP and
	// POP3. It equals Proxy unless the check uses implicit TLS, which
	// listens on its own ports (993, 995).
	Check map[Protocol]Endpoint
}

// Selector picks the backend a user's mail lives on.
type Selector interface {
	// Select returns the user's backend, or false when no rule names one.
	Select(user string) (*Backend, bool)
}
