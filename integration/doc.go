// Package integration proves imapgate against the real programs it sits
// between: the nginx mail proxy, which trusts its answers, and Dovecot, whose
// verdict it relays. The tests (go test ./integration) start two Dovecot 2.3
// backends (containers when a Docker engine is reachable, processes
// otherwise), an SMTP relay stand-in, and per scenario an imapgate built from
// this tree behind its own nginx, all on loopback addresses; real clients log
// in through nginx. See integration/README.md and package harness.
package integration
