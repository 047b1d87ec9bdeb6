package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// deferAccept has the kernel hand over a connection only once its first
// bytes have arrived (TCP_DEFER_ACCEPT): nginx sends its request right
// after connecting, so the first read then finds it, instead of finding
// nothing, parking the connection in the poller and being woken for it.
func deferAccept(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		// The value is how long, in seconds, a connection may stay silent
		// before it is handed over anyway (and then read, and timed out,
		// as any other).
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
