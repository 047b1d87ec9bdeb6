package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// slowIMAP is a stand-in IMAP server for the memory figure: it greets at
// once (so that imapgate's probes find it up) and holds every LOGIN until
// release is called (or maxHold has passed), then accepts it. With it,
// every one of 1,000 concurrent requests keeps a check in flight inside
// imapgate at the same moment: an HTTP connection from nginx's side, the
// request's goroutine, an IMAP client and its connection to the backend.
type slowIMAP struct {
	ln      net.Listener
	maxHold time.Duration
	held    atomic.Int64 // LOGINs waiting now
	logins  atomic.Int64 // LOGINs received in all

	mu      sync.Mutex
	release chan struct{}
	conns   sync.WaitGroup
}

func newSlowIMAP(addr string, maxHold time.Duration) (*slowIMAP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &slowIMAP{ln: ln, maxHold: maxHold, release: make(chan struct{})}
	go s.accept()
	return s, nil
}

func (s *slowIMAP) Addr() string { return s.ln.Addr().String() }

// Release answers the held LOGINs and those that come later, until Hold.
func (s *slowIMAP) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

// Hold makes LOGINs wait again.
func (s *slowIMAP) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
		s.release = make(chan struct{})
	default:
	}
}

func (s *slowIMAP) releaseChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.release
}

func (s *slowIMAP) Close() {
	s.ln.Close()
	s.Release()
	s.conns.Wait()
}

func (s *slowIMAP) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.serve(c)
		}()
	}
}

func (s *slowIMAP) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.maxHold + 30*time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	io.WriteString(w, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] bench slow server ready\r\n")
	w.Flush()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		cmd, _, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(cmd) {
		case "CAPABILITY":
			io.WriteString(w, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"+tag+" OK done\r\n")
		case "LOGIN":
			s.logins.Add(1)
			s.held.Add(1)
			select {
			case <-s.releaseChan():
			case <-time.After(s.maxHold):
			}
			s.held.Add(-1)
			io.WriteString(w, tag+" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
		case "LOGOUT":
			io.WriteString(w, "* BYE bye\r\n"+tag+" OK done\r\n")
			w.Flush()
			return
		case "NOOP":
			io.WriteString(w, tag+" OK done\r\n")
		default:
			io.WriteString(w, tag+" BAD not in this server\r\n")
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}
