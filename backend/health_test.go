package backend

import (
	"github.com/imapgate/imapgate/imapcheck"

	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// greeter accepts connections on loopback and sends each one greeting.
func greeter(t *testing.T, greeting string) (Endpoint, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port
	stop := func() { ln.Close(); wg.Wait() }
	t.Cleanup(stop)
	return Endpoint{Host: "127.0.0.1", Port: uint16(port)}, stop
}

// closedEndpoint is a loopback port nothing listens on.
func closedEndpoint(t *testing.T) Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return Endpoint{Host: "127.0.0.1", Port: uint16(port)}
}

func TestHealth(t *testing.T) {
	imapOK, _ := greeter(t, "* OK [CAPABILITY IMAP4rev1] ready\r\n")
	pop3OK, stopPOP3 := greeter(t, "+OK ready\r\n")
	smtpOK, _ := greeter(t, "220-mx ESMTP\r\n220 mx\r\n")
	imapBye, _ := greeter(t, "* BYE Too many connections\r\n")
	tlsPort, _ := greeter(t, "") // the check's TLS port: connecting is enough

	h := &Health{Backends: map[string]*Backend{
		"good": {Name: "good",
			Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: imapOK, imapcheck.POP3: pop3OK, imapcheck.SMTP: smtpOK},
			Check: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: tlsPort, imapcheck.POP3: pop3OK}},
		"busy": {Name: "busy", Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: imapBye}, Check: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: imapBye}},
		"gone": {Name: "gone", Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.POP3: closedEndpoint(t)}, Check: map[imapcheck.Protocol]Endpoint{}},
	}}
	var mu sync.Mutex
	changes := map[string]bool{}
	h.OnChange = func(backend string, proto imapcheck.Protocol, addr string, up bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		changes[backend+"/"+string(proto)+"/"+addr] = up
	}

	if !h.Up("good", imapcheck.IMAP) {
		t.Error("a backend not probed yet is not up")
	}
	if ready, missing := h.Ready(); ready || len(missing) != 6 {
		t.Errorf("Ready before probing = %v, %v", ready, missing)
	}
	h.ProbeAll(context.Background())
	for _, tt := range []struct {
		backend string
		proto   imapcheck.Protocol
		want    bool
	}{
		{"good", imapcheck.IMAP, true}, {"good", imapcheck.POP3, true}, {"good", imapcheck.SMTP, true},
		{"busy", imapcheck.IMAP, false}, {"gone", imapcheck.POP3, false},
	} {
		if got := h.Up(tt.backend, tt.proto); got != tt.want {
			t.Errorf("Up(%s, %s) = %v, want %v", tt.backend, tt.proto, got, tt.want)
		}
	}
	ready, missing := h.Ready()
	if ready || len(missing) != 2 || !strings.Contains(strings.Join(missing, ";"), "busy imap") {
		t.Errorf("Ready = %v, %v; want busy and gone down", ready, missing)
	}
	if len(changes) != 6 {
		t.Errorf("first probes reported %d changes, want 6: %v", len(changes), changes)
	}

	// The POP3 server goes away: the next round sees it.
	stopPOP3()
	clear(changes)
	h.ProbeAll(context.Background())
	if h.Up("good", imapcheck.POP3) {
		t.Error("a stopped server is still up")
	}
	if len(changes) != 1 || changes["good/pop3/127.0.0.1:"+strconv.Itoa(int(pop3OK.Port))] {
		t.Errorf("changes after one server stopped: %v", changes)
	}
}

func TestHealthRunStops(t *testing.T) {
	ep, _ := greeter(t, "* OK\r\n")
	h := &Health{Backends: map[string]*Backend{"b": {Name: "b", Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.IMAP: ep}}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	cancel()
	<-done // goleak in TestMain checks that nothing is left behind
}

// TestHealthRecheck shows a backend that comes back being seen at the
// next Recheck, long before the next tick.
func TestHealthRecheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	ep := Endpoint{Host: "127.0.0.1", Port: uint16(p)}
	changed := make(chan bool, 4)
	h := &Health{
		Backends: map[string]*Backend{"b": {Name: "b", Proxy: map[imapcheck.Protocol]Endpoint{imapcheck.POP3: ep}}},
		Interval: time.Hour,
		OnChange: func(_ string, _ imapcheck.Protocol, _ string, up bool, _ error) { changed <- up },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if up := <-changed; up {
		t.Fatal("first probe of a closed port: up")
	}
	// The backend comes back on the same port.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("+OK back\r\n"))
			c.Close()
		}
	}()
	h.Recheck()
	select {
	case up := <-changed:
		if !up {
			t.Error("after Recheck: still down")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Recheck did not probe")
	}
}
