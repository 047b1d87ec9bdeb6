package http1

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// The system calls fdListener and fdConn make on non-blocking descriptors
// (accept4, read, write, close; getsockname, which never waits either,
// so that one conversion of the kernel's addresses serves both ends) are
// made raw: without telling the
// scheduler, as syscall's wrappers do, that the goroutine may block in
// the kernel. They never wait (a call that would wait returns EAGAIN),
// but loopback TCP's accept4 and write do the peer's share of the work
// too and can take longer than the 20 µs after which the runtime's
// monitor (sysmon) hands a P in a system call to another thread, waking
// one. Each such handoff also put the monitor back on its 20 µs tick.
// Under wrk these wake-ups were a tenth of imapgate's CPU profile
// (perf: sysmon's sleeps 5.7% and futex wake-ups), and the cached answer
// was 0.89–0.91× nginx's; raw, sysmon's share fell to 1.4% and the
// answer to 0.98–1.00× (README, Performance). listenFD makes sure the
// listener is non-blocking, so that a raw accept4 cannot hold a P while
// it waits.

// rawAccept4 accepts a connection on the non-blocking listener lfd, the
// new descriptor non-blocking too, and returns the peer's address as net
// names it on network.
func rawAccept4(lfd int, network string) (int, net.Addr, error) {
	var rsa syscall.RawSockaddrAny
	size := uint32(syscall.SizeofSockaddrAny)
	fd, _, errno := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd),
		uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)),
		syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, nil, errno
	}
	return int(fd), rawSockaddrAddr(network, &rsa), nil
}

// rawGetsockname returns the local address of the socket fd as net
// names it on network.
func rawGetsockname(fd int, network string) (net.Addr, error) {
	var rsa syscall.RawSockaddrAny
	size := uint32(syscall.SizeofSockaddrAny)
	_, _, errno := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, uintptr(fd),
		uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return nil, errno
	}
	return rawSockaddrAddr(network, &rsa), nil
}

// rawSockaddrAddr is the address the kernel wrote into rsa as net names
// it.
func rawSockaddrAddr(network string, rsa *syscall.RawSockaddrAny) net.Addr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(&sa.Port)))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		addr := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			addr = addr.WithZone(zoneName(sa.Scope_id))
		}
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, networkPort(&sa.Port)))
	case syscall.AF_UNIX:
		sa := (*syscall.RawSockaddrUnix)(unsafe.Pointer(rsa))
		return &net.UnixAddr{Name: unixPath(sa), Net: network}
	}
	return &net.UnixAddr{Net: network}
}

// networkPort reads a port the kernel stores in network byte order.
func networkPort(p *uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:])
}

// zoneName names an IPv6 scope as net does: the interface's name, or its
// index.
func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}

// unixPath is a unix socket address's path as syscall's accept4 gives
// it: up to the first NUL, with a leading NUL (an abstract name, or an
// unnamed peer, the usual client) written "@".
func unixPath(sa *syscall.RawSockaddrUnix) string {
	path := make([]byte, 0, len(sa.Path))
	for i, c := range sa.Path {
		if c == 0 && i > 0 {
			break
		}
		if c == 0 {
			c = '@'
		}
		path = append(path, byte(c))
	}
	return string(path)
}

// nonBlocking reports whether rc's descriptor is in non-blocking mode.
// (os.File's Fd would have put it in blocking mode to say which it is.)
func nonBlocking(rc syscall.RawConn) bool {
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	}); err != nil || errno != 0 {
		return false
	}
	return flags&syscall.O_NONBLOCK != 0
}

// rawRead reads from the non-blocking descriptor fd. Under the race
// detector it is syscall's Read: syscall's Read and Write tell the
// detector that what was written before a write happened before what a
// read then does (a test checking, once the answer is in, what the
// handler recorded), and raw calls would not.
func rawRead(fd int, b []byte) (int, error) {
	if raceEnabled {
		return syscall.Read(fd, b)
	}
	return rawReadWrite(syscall.SYS_READ, fd, b)
}

// rawWrite writes to the non-blocking descriptor fd; under the race
// detector it is syscall's Write (see rawRead).
func rawWrite(fd int, b []byte) (int, error) {
	if raceEnabled {
		return syscall.Write(fd, b)
	}
	return rawReadWrite(syscall.SYS_WRITE, fd, b)
}

func rawReadWrite(trap uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawClose closes fd: a socket without SO_LINGER, whose close never
// waits for the peer.
func rawClose(fd int) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); errno != 0 {
		return errno
	}
	return nil
}
