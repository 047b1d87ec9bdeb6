package http1

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// acceptPair returns a connection accepted through listenFD and the
// client's end of it.
func acceptPair(t *testing.T, network, addr string) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	fl := listenFD(ln)
	t.Cleanup(func() { fl.Close() })
	if _, ok := fl.(*fdListener); !ok {
		t.Fatalf("listenFD(%T) = %T, want *fdListener", ln, fl)
	}
	client, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = fl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	if _, ok := server.(*fdConn); !ok {
		t.Fatalf("Accept gave %T, want *fdConn", server)
	}
	return server, client
}

// The peer's address is the one net would give; bytes go both ways.
func TestFDConnAddressesAndBytes(t *testing.T) {
	server, client := acceptPair(t, "tcp", "127.0.0.1:0")
	ra, ok := server.RemoteAddr().(*net.TCPAddr)
	if !ok || ra.String() != client.LocalAddr().String() {
		t.Errorf("RemoteAddr %v (%T), want %v", server.RemoteAddr(), server.RemoteAddr(), client.LocalAddr())
	}
	if server.LocalAddr().String() != client.RemoteAddr().String() {
		t.Errorf("LocalAddr %v, want %v", server.LocalAddr(), client.RemoteAddr())
	}
	io.WriteString(client, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	io.WriteString(server, "pong")
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	client.Close()
	if n, err := server.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("after the client left: %d, %v, want io.EOF", n, err)
	}
}

// A read with nothing there yet waits (promoted to the poller), and its
// deadline, set before, still holds.
func TestFDConnReadWaitsWithDeadline(t *testing.T) {
	server, client := acceptPair(t, "tcp", "127.0.0.1:0")
	server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := server.Read(make([]byte, 1))
	if !isTimeout(err) {
		t.Fatalf("read with nothing sent: %v, want a timeout", err)
	}
	server.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(client, "late")
	}()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// An expired deadline refuses a read on the descriptor too.
func TestFDConnExpiredDeadline(t *testing.T) {
	server, client := acceptPair(t, "tcp", "127.0.0.1:0")
	io.WriteString(client, "there")
	time.Sleep(20 * time.Millisecond)
	server.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := server.Read(make([]byte, 8)); !isTimeout(err) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
}

// A write larger than the socket's buffer goes out whole: what the
// descriptor does not take, the promoted connection sends.
func TestFDConnLongWrite(t *testing.T) {
	server, client := acceptPair(t, "tcp", "127.0.0.1:0")
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	server.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if n, err := server.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write: %d of %d, %v", n, len(want), err)
	}
	server.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("client got %d bytes, want %d", len(b), len(want))
	}
}

// Close from another goroutine ends a read that waits, and later calls
// say the connection is closed.
func TestFDConnCloseEndsWaitingRead(t *testing.T) {
	server, _ := acceptPair(t, "tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		done <- err
	}()
	// Closed only once the read has found nothing and waits in the
	// poller: the case eviction and Shutdown meet.
	fc := server.(*fdConn)
	waitFor(t, "the read to wait", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.nc != nil
	})
	time.Sleep(20 * time.Millisecond)
	server.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("waiting read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting read")
	}
	// Closed before any wait: nothing touches the descriptor again.
	other, _ := acceptPair(t, "tcp", "127.0.0.1:0")
	other.Close()
	if _, err := other.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := other.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}

// Closing the listener ends a waiting Accept with net.ErrClosed, as Serve
// expects.
func TestFDListenerCloseEndsAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := listenFD(ln)
	done := make(chan error, 1)
	go func() {
		_, err := fl.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	fl.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Accept")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the closed listener still takes connections")
	}
}

// Unix sockets are accepted the same way, with a unix peer address.
func TestFDConnUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	server, client := acceptPair(t, "unix", path)
	if server.RemoteAddr().Network() != "unix" {
		t.Errorf("RemoteAddr network %q, want unix", server.RemoteAddr().Network())
	}
	io.WriteString(client, "hi")
	buf := make([]byte, 2)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if err := server.(*fdConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(buf); err != io.EOF {
		t.Errorf("client read after CloseWrite: %v, want io.EOF", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file: %v", err)
	}
}

// An IPv6 connection's addresses are the ones net would give.
func TestFDConnIPv6Address(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	ln.Close()
	server, client := acceptPair(t, "tcp", "[::1]:0")
	if server.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, want %v", server.RemoteAddr(), client.LocalAddr())
	}
	if server.LocalAddr().String() != client.RemoteAddr().String() {
		t.Errorf("LocalAddr %v, want %v", server.LocalAddr(), client.RemoteAddr())
	}
}

// A unix peer's address is the one net's own accept gives, named or not.
func TestFDConnUnixPeerAddress(t *testing.T) {
	dir := t.TempDir()
	netLn, err := net.Listen("unix", filepath.Join(dir, "net"))
	if err != nil {
		t.Fatal(err)
	}
	defer netLn.Close()
	for _, local := range []string{"", filepath.Join(dir, "client")} {
		var laddr *net.UnixAddr
		if local != "" {
			laddr = &net.UnixAddr{Name: local, Net: "unix"}
		}
		dial := func(addr net.Addr) net.Conn {
			os.Remove(local)
			c, err := net.DialUnix("unix", laddr, addr.(*net.UnixAddr))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		dial(netLn.Addr())
		byNet, err := netLn.Accept()
		if err != nil {
			t.Fatal(err)
		}
		byNet.Close()

		fdLn, err := net.Listen("unix", filepath.Join(dir, "fd"+filepath.Base(local)))
		if err != nil {
			t.Fatal(err)
		}
		fl := listenFD(fdLn)
		defer fl.Close()
		dial(fdLn.Addr())
		byFD, err := fl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		byFD.Close()
		if byFD.RemoteAddr().String() != byNet.RemoteAddr().String() {
			t.Errorf("client bound to %q: RemoteAddr %q, net gives %q", local, byFD.RemoteAddr(), byNet.RemoteAddr())
		}
	}
}

// A listener in blocking mode is served through net, not accepted on raw:
// a raw accept4 on it would hold a thread of the scheduler's while it
// waits.
func TestListenFDRefusesBlockingListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Fd() // puts the shared file description in blocking mode
	if got := listenFD(ln); got != ln {
		t.Errorf("listenFD of a blocking listener = %T, want the listener itself", got)
	}
}
