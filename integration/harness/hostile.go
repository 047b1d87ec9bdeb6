package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// Hostile is a mail server that misbehaves on purpose: each connection
// runs a script, one goroutine each. The fault scenarios and the bench
// script the backends they need with it.
type Hostile struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// Script is what a Hostile does with one connection; r reads it.
type Script func(c net.Conn, r *bufio.Reader)

// StartHostile serves addr with script until Close.
func StartHostile(addr string, script Script) (*Hostile, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hostile server on %s: %w", addr, err)
	}
	h := &Hostile{ln: ln, conns: map[net.Conn]bool{}}
	h.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns[c] = true
			h.mu.Unlock()
			h.wg.Go(func() {
				defer func() {
					c.Close()
					h.mu.Lock()
					delete(h.conns, c)
					h.mu.Unlock()
				}()
				script(c, bufio.NewReader(c))
			})
		}
	})
	return h, nil
}

// Close stops the server and ends its connections.
func (h *Hostile) Close() {
	h.ln.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Endless writes "AAAA…" to c until the peer hangs up.
func Endless(c net.Conn) {
	chunk := bytes.Repeat([]byte("A"), 16<<10)
	for {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// EndlessGreeting greets with prefix ("* OK ", "+OK ") and a line that
// never ends.
func EndlessGreeting(prefix string) Script {
	return func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, prefix)
		Endless(c)
	}
}

// IMAPUntil greets like an IMAP server and answers every command OK until
// one whose name is verb arrives; then it hands over to then.
func IMAPUntil(verb string, then func(c net.Conn, tag string)) Script {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && strings.EqualFold(f[1], verb):
				then(c, f[0])
				return
			case len(f) >= 2:
				fmt.Fprintf(c, "%s OK %s done\r\n", f[0], f[1])
			}
		}
	}
}

// POP3Until greets like a POP3 server that offers USER, and answers +OK
// until the command verb arrives; then it hands over to then.
func POP3Until(verb string, then func(c net.Conn)) Script {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "+OK hostile ready\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) >= 1 && strings.EqualFold(f[0], verb):
				then(c)
				return
			case len(f) >= 1 && strings.EqualFold(f[0], "CAPA"):
				io.WriteString(c, "+OK\r\nUSER\r\n.\r\n")
			default:
				io.WriteString(c, "+OK\r\n")
			}
		}
	}
}

// EndlessLines writes a +OK and then 1,000-byte lines without end: a
// POP3 multi-line answer that never ends.
func EndlessLines(c net.Conn) {
	io.WriteString(c, "+OK\r\n")
	line := strings.Repeat("X", 1000) + "\r\n"
	for {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}

// Stall reads whatever comes and never answers.
func Stall(_ net.Conn, r *bufio.Reader) { io.Copy(io.Discard, r) }

// GreetThenStall greets with the line greeting, then never answers.
func GreetThenStall(greeting string) Script {
	return func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, greeting+"\r\n")
		Stall(c, r)
	}
}
