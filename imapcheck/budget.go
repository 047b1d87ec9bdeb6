package imapcheck

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// DefaultMaxRead bounds what one check reads from its server, TLS records
// included, when Verifier.MaxRead is zero. A real login reads well under
// 8 KiB: Dovecot's greeting, ID and LOGIN answers are about 1 KiB, a TLS
// handshake with a chain of two certificates some 4 KiB.
const DefaultMaxRead = 32 << 10

// maxGreetingRead bounds what a probe reads: the greeting alone.
const maxGreetingRead = 16 << 10

// ErrOversized is wrapped by the error of a check or probe whose server
// sent more than it reads: a line without end, a reply that never stops,
// a literal too large. Whatever a server sends, a check holds at most
// Verifier.MaxRead bytes of it.
var ErrOversized = errors.New("server sent more than a check reads")

// errLineTooLong is returned for a server line longer than maxLine.
var errLineTooLong = fmt.Errorf("%w: a line longer than 4 KiB", ErrOversized)

// budgetConn is a net.Conn that reads at most a fixed number of bytes in
// all, and then fails every read. It bounds what go-imap's client reads
// too, whose decoder would otherwise grow a reply line or a literal for
// as long as the server sends one.
type budgetConn struct {
	net.Conn
	left    int64 // only the one reader touches it
	limit   int64
	tripped atomic.Bool
}

// newBudgetConn returns conn reading at most limit bytes.
func newBudgetConn(conn net.Conn, limit int) *budgetConn {
	return &budgetConn{Conn: conn, left: int64(limit), limit: int64(limit)}
}

func (c *budgetConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.tripped.Store(true)
		return 0, c.err()
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

// exceeded reports whether a read was refused for want of budget.
func (c *budgetConn) exceeded() bool { return c.tripped.Load() }

func (c *budgetConn) err() error {
	return fmt.Errorf("%w: more than %d bytes", ErrOversized, c.limit)
}
