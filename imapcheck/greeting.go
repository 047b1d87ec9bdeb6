package imapcheck

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
)

// maxGreetingLines bounds a multi-line SMTP greeting (RFC 5321 section
// 4.2); real servers send one or two lines.
const maxGreetingLines = 16

// ReadGreeting reads a server's greeting from conn, within conn's
// deadline, and returns nil when it says the server is ready: IMAP "* OK"
// or "* PREAUTH" (RFC 9051 section 7.1), POP3 "+OK" (RFC 1939 section 4),
// SMTP "220" (RFC 5321 section 4.2). It reads at most 16 KiB, however
// much the server sends (ErrOversized). It is the probe's half of a check.
func ReadGreeting(conn net.Conn, proto Protocol) error {
	_, e := readGreeting(bufio.NewReaderSize(newBudgetConn(conn, maxGreetingRead), maxLine), proto)
	if e == nil || e.Outcome == Unsupported {
		// Unsupported is PREAUTH: ready, though a check could not use it.
		return nil
	}
	return e
}

// readGreeting reads the greeting of proto's server from r, which must
// have been made with bufio.NewReaderSize(…, maxLine), and returns its
// (first) line when it is ready.
func readGreeting(r *bufio.Reader, proto Protocol) (string, *Error) {
	line, err := readLine(r)
	if err != nil {
		return "", &Error{Outcome: Temporary, Err: fmt.Errorf("greeting: %w", err)}
	}
	switch proto {
	case IMAP:
		return imapGreeting(line)
	case POP3:
		switch {
		case line == "+OK" || strings.HasPrefix(line, "+OK "):
			return line, nil
		case strings.HasPrefix(line, "-ERR"):
			return "", &Error{Outcome: Temporary, Reply: line}
		}
	case SMTP:
		return smtpGreeting(r, line)
	}
	return "", &Error{Outcome: Temporary, Err: fmt.Errorf("malformed greeting %q", line)}
}

// imapGreeting checks an IMAP greeting line (RFC 9051 section 7.1).
func imapGreeting(line string) (string, *Error) {
	switch f := strings.Fields(line); {
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "OK"):
		return line, nil
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "BYE"):
		return "", &Error{Outcome: Temporary, Reply: line[2:]}
	case len(f) >= 2 && f[0] == "*" && strings.EqualFold(f[1], "PREAUTH"):
		// RFC 9051 section 7.1.4: the server logged us in without
		// credentials, so it cannot tell whether they are right.
		return "", &Error{Outcome: Unsupported, Reply: line[2:], Err: errors.New("server greeted with PREAUTH, so the password cannot be checked")}
	}
	return "", &Error{Outcome: Temporary, Err: fmt.Errorf("malformed greeting %q", line)}
}

// smtpGreeting checks an SMTP greeting whose first line is first,
// reading its continuation lines ("220-…") from r.
func smtpGreeting(r *bufio.Reader, first string) (string, *Error) {
	line := first
	for range maxGreetingLines {
		switch {
		case line == "220" || strings.HasPrefix(line, "220 "):
			return first, nil
		case strings.HasPrefix(line, "220-"):
		default:
			return "", &Error{Outcome: Temporary, Reply: line}
		}
		var err error
		if line, err = readLine(r); err != nil {
			return "", &Error{Outcome: Temporary, Err: fmt.Errorf("greeting: %w", err)}
		}
	}
	return "", &Error{Outcome: Temporary, Err: errors.New("greeting: too many lines")}
}
