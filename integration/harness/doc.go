// Package harness starts, on loopback addresses, what imapgate's integration
// tests and `make demo` run: a test CA, Dovecot backends (containers of the
// image built by integration/dovecot/build-image.sh, or processes), an SMTP
// relay stand-in, and per scenario the imapgate binary built from this tree
// behind its own nginx mail proxy. Readiness is awaited by signal (a greeting,
// a log line) with deadlines; everything started is stopped by Close, and a
// later run stops what a crashed one left behind. See integration/README.md
// for the environment variables it reads.
package harness
