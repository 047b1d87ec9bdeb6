package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Message is one message the relay stand-in accepted.
type Message struct {
	// Addr is the relay address that received it (which backend's SMTP).
	Addr string
	// From and To are the envelope.
	From string
	To   []string
	// Data is the message as sent after DATA, dot-unstuffed, CRLF line ends.
	Data string
}

// Relay is the stand-in for the backends' SMTP relays: an SMTP server that
// accepts every message and records it. nginx hands an authenticated SMTP
// session to it after imapgate's OK, so what it records is exactly what a
// login let through. It speaks just enough of RFC 5321 for nginx and
// net/smtp (EHLO/HELO, XCLIENT, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
type Relay struct {
	mu       sync.Mutex
	messages []Message
	sessions []string // remote address of every session, for diagnostics
	changed  chan struct{}
	lns      []net.Listener
	wg       sync.WaitGroup
	conns    map[net.Conn]struct{}
}

// NewRelay starts a relay on each address (host:port).
func NewRelay(addrs ...string) (*Relay, error) {
	r := &Relay{changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	for _, a := range addrs {
		if err := r.Listen(a); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// Listen adds an address to the relay.
func (r *Relay) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smtp relay stand-in: %w", err)
	}
	r.mu.Lock()
	r.lns = append(r.lns, ln)
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = struct{}{}
			r.sessions = append(r.sessions, c.RemoteAddr().String())
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, ln.Addr().String())
				r.mu.Lock()
				delete(r.conns, c)
				r.mu.Unlock()
			}()
		}
	}()
	return nil
}

// Close stops listening, ends open sessions and waits for them.
func (r *Relay) Close() error {
	r.mu.Lock()
	for _, ln := range r.lns {
		ln.Close()
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// Messages returns the messages accepted so far whose envelope sender or
// data contains token ("" for all).
func (r *Relay) Messages(token string) []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Message
	for _, m := range r.messages {
		if token == "" || strings.Contains(m.From, token) || strings.Contains(m.Data, token) {
			out = append(out, m)
		}
	}
	return out
}

// WaitMessage waits for a message containing token.
func (r *Relay) WaitMessage(ctx context.Context, token string) (Message, error) {
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if ms := r.Messages(token); len(ms) > 0 {
			return ms[0], nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Message{}, fmt.Errorf("no message with %q reached the relay: %w", token, ctx.Err())
		}
	}
}

func (r *Relay) record(m Message) {
	r.mu.Lock()
	r.messages = append(r.messages, m)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *Relay) serve(c net.Conn, local string) {
	defer c.Close()
	br := bufio.NewReader(c)
	reply := func(s string) bool {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := fmt.Fprintf(c, "%s\r\n", s)
		return err == nil
	}
	if !reply("220 relay.imapgate-it ESMTP stand-in") {
		return
	}
	var m Message
	for {
		c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		ok := true
		switch strings.ToUpper(verb) {
		case "EHLO":
			ok = reply("250-relay.imapgate-it\r\n250-XCLIENT NAME ADDR PROTO HELO LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8")
		case "HELO":
			ok = reply("250 relay.imapgate-it")
		case "XCLIENT":
			ok = reply("220 relay.imapgate-it ESMTP stand-in")
		case "MAIL":
			m = Message{Addr: local, From: envelopeAddr(arg)}
			ok = reply("250 2.1.0 Ok")
		case "RCPT":
			m.To = append(m.To, envelopeAddr(arg))
			ok = reply("250 2.1.5 Ok")
		case "DATA":
			if m.From == "" || len(m.To) == 0 {
				ok = reply("503 5.5.1 need MAIL and RCPT first")
				break
			}
			if !reply("354 End data with <CR><LF>.<CR><LF>") {
				return
			}
			data, err := readData(br)
			if err != nil {
				return
			}
			m.Data = data
			r.record(m)
			m = Message{}
			ok = reply("250 2.0.0 Ok: queued")
		case "RSET":
			m = Message{}
			ok = reply("250 2.0.0 Ok")
		case "NOOP":
			ok = reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			ok = reply("502 5.5.2 command not recognized")
		}
		if !ok {
			return
		}
	}
}

func envelopeAddr(arg string) string {
	_, a, _ := strings.Cut(arg, ":")
	a = strings.TrimSpace(a)
	if i := strings.IndexByte(a, '>'); i >= 0 {
		a = a[:i+1]
	}
	return strings.Trim(a, "<>")
}

func readData(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == ".\r\n" || line == ".\n" {
			return b.String(), nil
		}
		line = strings.TrimPrefix(line, ".")
		b.WriteString(line)
		if b.Len() > 10<<20 {
			return "", errors.New("message too large")
		}
	}
}
