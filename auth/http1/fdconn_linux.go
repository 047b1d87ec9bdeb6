package http1

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// On Linux the Server accepts with accept4 itself and serves each
// connection with plain system calls on its descriptor (fdConn) until a
// read or write would have to wait; only then is the connection handed
// to the runtime's poller. nginx's request is already there when its
// connection is accepted (the program asks for TCP_DEFER_ACCEPT) and the
// answer fits the socket's buffer, so most connections never wait:
// net's Accept would register each with the poller and remove it again,
// and ask for its local address and set TCP_NODELAY: four system calls
// of the eight a cached answer made (strace -c), where it now makes
// accept4, read, write and close, made raw (rawsys_linux.go says why).

// fdListener accepts with accept4 on a duplicate of a listener's
// descriptor: net's listeners offer no way to wait for a connection on
// their own descriptor (their raw Read is refused), an os.File's do.
type fdListener struct {
	net.Listener
	file    *os.File
	rc      syscall.RawConn
	network string
}

// listenFD returns ln as the Server accepts on it: an fdListener for TCP
// and unix listeners, ln itself for any other, or if the descriptor cannot
// be had or would block.
func listenFD(ln net.Listener) net.Listener {
	var (
		network string
		file    *os.File
		err     error
	)
	switch l := ln.(type) {
	case *net.TCPListener:
		network = "tcp"
		file, err = l.File()
	case *net.UnixListener:
		network = "unix"
		file, err = l.File()
	default:
		return ln
	}
	if err != nil {
		return ln
	}
	rc, err := file.SyscallConn()
	// A raw accept4 (rawsys_linux.go) must never wait: the descriptor
	// must be non-blocking, as net's are.
	if err != nil || !nonBlocking(rc) {
		file.Close()
		return ln
	}
	return &fdListener{Listener: ln, file: file, rc: rc, network: network}
}

// Close closes the duplicate, which ends a waiting Accept, and the
// listener.
func (l *fdListener) Close() error {
	l.file.Close()
	return l.Listener.Close()
}

// Accept accepts one connection, waiting in the poller while there is
// none.
func (l *fdListener) Accept() (net.Conn, error) {
	var (
		fd     int
		remote net.Addr
		aerr   error
	)
	err := l.rc.Read(func(lfd uintptr) bool {
		for {
			// Not x/sys/unix's accept4 either: that one asks every IPv4
			// and IPv6 socket for its protocol (L2TP or not), a system
			// call more per connection.
			fd, remote, aerr = rawAccept4(int(lfd), l.network)
			switch aerr {
			case syscall.EINTR, syscall.ECONNABORTED:
				continue // as net does: the next one, if any
			case syscall.EAGAIN:
				return false // none yet: wait until the listener is readable
			}
			return true
		}
	})
	if err != nil {
		// Closed: said as net says it, which Serve knows.
		return nil, &net.OpError{Op: "accept", Net: l.network, Addr: l.Addr(), Err: net.ErrClosed}
	}
	if aerr != nil {
		return nil, &net.OpError{Op: "accept", Net: l.network, Addr: l.Addr(), Err: os.NewSyscallError("accept4", aerr)}
	}
	return &fdConn{fd: fd, network: l.network, remote: remote}, nil
}

// fdConn is an accepted connection served on its descriptor, without the
// poller, until a read or write would wait; then it is promoted to a
// net.Conn and everything goes through that. Its methods may be called
// from several goroutines, as net.Conn's may: the tracker and Shutdown
// close connections another goroutine reads.
type fdConn struct {
	mu      sync.Mutex
	fd      int      // -1 once closed or promoted
	nc      net.Conn // the promoted connection, if any
	network string
	remote  net.Addr
	// Deadlines set before promotion: a read or write on the descriptor
	// never waits, so they matter only once expired, and after
	// promotion, which applies them.
	readDeadline, writeDeadline time.Time
	wrote                       bool // a write went out on the descriptor
}

// Read reads from the descriptor, or, when nothing is there yet, from
// the promoted connection, which waits.
func (c *fdConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.nc == nil {
		if err := c.usable(c.readDeadline); err != nil {
			c.mu.Unlock()
			return 0, c.opError("read", err)
		}
		n, err := ignoringEINTR(func() (int, error) { return rawRead(c.fd, b) })
		if err != syscall.EAGAIN {
			c.mu.Unlock()
			switch {
			case err != nil:
				return 0, c.opError("read", os.NewSyscallError("read", err))
			case n == 0 && len(b) > 0:
				return 0, io.EOF
			}
			return n, nil
		}
		if err := c.promote(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	nc := c.nc
	c.mu.Unlock()
	return nc.Read(b)
}

// Write writes to the descriptor, and what the socket's buffer does not
// take through the promoted connection, which waits.
func (c *fdConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	done := 0
	if c.nc == nil {
		if err := c.usable(c.writeDeadline); err != nil {
			c.mu.Unlock()
			return 0, c.opError("write", err)
		}
		if c.wrote && c.network == "tcp" {
			// A second answer on the connection (keep-alive, pipelining)
			// must not wait behind Nagle's algorithm for the client's ack.
			syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		}
		c.wrote = true
		for done < len(b) {
			n, err := ignoringEINTR(func() (int, error) { return rawWrite(c.fd, b[done:]) })
			if n > 0 {
				done += n
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				c.mu.Unlock()
				return done, c.opError("write", os.NewSyscallError("write", err))
			}
		}
		if done == len(b) {
			c.mu.Unlock()
			return done, nil
		}
		if err := c.promote(); err != nil {
			c.mu.Unlock()
			return done, err
		}
	}
	nc := c.nc
	c.mu.Unlock()
	n, err := nc.Write(b[done:])
	return done + n, err
}

// usable says why the descriptor cannot be used now, if it cannot.
// Called with c.mu held.
func (c *fdConn) usable(deadline time.Time) error {
	if c.fd < 0 {
		return net.ErrClosed
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// promote hands the descriptor to net, which registers it with the
// poller, and applies the deadlines set so far. Called with c.mu held.
func (c *fdConn) promote() error {
	f := os.NewFile(uintptr(c.fd), "")
	nc, err := net.FileConn(f) // a duplicate of the descriptor
	f.Close()
	c.fd = -1
	if err != nil {
		return c.opError("promote", err)
	}
	if !c.readDeadline.IsZero() {
		nc.SetReadDeadline(c.readDeadline)
	}
	if !c.writeDeadline.IsZero() {
		nc.SetWriteDeadline(c.writeDeadline)
	}
	c.nc = nc
	return nil
}

// Close closes the connection; a Read or Write waiting on it returns.
func (c *fdConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		return c.nc.Close()
	}
	if c.fd < 0 {
		return c.opError("close", net.ErrClosed)
	}
	err := rawClose(c.fd)
	c.fd = -1
	if err != nil {
		return c.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

// CloseWrite shuts down the sending side, as net.TCPConn's does.
func (c *fdConn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		return nil
	}
	if c.fd < 0 {
		return c.opError("close", net.ErrClosed)
	}
	return os.NewSyscallError("shutdown", syscall.Shutdown(c.fd, syscall.SHUT_WR))
}

// LocalAddr asks the descriptor, or the promoted connection.
func (c *fdConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		return c.nc.LocalAddr()
	}
	if c.fd >= 0 {
		if addr, err := rawGetsockname(c.fd, c.network); err == nil {
			return addr
		}
	}
	return &net.UnixAddr{Net: c.network}
}

// RemoteAddr is the peer's address as accept4 gave it.
func (c *fdConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *fdConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds reads from now on.
func (c *fdConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		return c.nc.SetReadDeadline(t)
	}
	c.readDeadline = t
	return nil
}

// SetWriteDeadline bounds writes from now on.
func (c *fdConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		return c.nc.SetWriteDeadline(t)
	}
	c.writeDeadline = t
	return nil
}

func (c *fdConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.network, Addr: c.remote, Err: err}
}

// ignoringEINTR retries f while the system call is interrupted.
func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			return n, err
		}
	}
}
