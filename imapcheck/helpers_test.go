package imapcheck

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test, with a server
// certificate for 127.0.0.1 and localhost.
type testCA struct {
	// Roots trusts only this CA.
	Roots *x509.CertPool
	// Server is a server configuration presenting the certificate.
	Server *tls.Config
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imapcheck test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return &testCA{
		Roots: roots,
		Server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der, caDER}, PrivateKey: key}},
		},
	}
}

// client returns a client configuration trusting only ca.
func (ca *testCA) client() *tls.Config { return &tls.Config{RootCAs: ca.Roots} }

// scriptServer serves one connection per script on 127.0.0.1, one script
// after the other.
type scriptServer struct {
	Addr  string
	ln    net.Listener
	done  chan struct{}
	conns atomic.Int32
}

// peer is the server's end of one scripted connection.
type peer struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// startScript runs script on the first connection to the returned server,
// through TLS from the first byte if tlsConfig is not nil. The test waits
// for script to return before it ends.
func startScript(t testing.TB, tlsConfig *tls.Config, script func(p *peer)) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{Addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		conn, err := ln.Accept()
		if err != nil {
			return // closed before anyone came
		}
		s.conns.Add(1)
		defer conn.Close()
		if tlsConfig != nil {
			conn = tls.Server(conn, tlsConfig)
		}
		script(&peer{t: t, conn: conn, r: bufio.NewReader(conn)})
	}()
	t.Cleanup(s.wait)
	return s
}

// wait closes the listener and waits for the script to end.
func (s *scriptServer) wait() {
	s.ln.Close()
	<-s.done
}

// send writes lines, each ended by CRLF.
func (p *peer) send(lines ...string) {
	for _, l := range lines {
		if _, err := io.WriteString(p.conn, l+"\r\n"); err != nil {
			p.t.Errorf("server: send %q: %v", l, err)
			return
		}
	}
}

// sendMaybe writes lines the client may not wait for, such as the answer
// to a goodbye: a failed write is no failure.
func (p *peer) sendMaybe(lines ...string) {
	for _, l := range lines {
		if _, err := io.WriteString(p.conn, l+"\r\n"); err != nil {
			return
		}
	}
}

// expect reads one line and checks that it is want.
func (p *peer) expect(want string) bool {
	got, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Errorf("server: want %q, got %q and %v", want, got, err)
		return false
	}
	got = strings.TrimSuffix(got, "\r\n")
	if got != want {
		p.t.Errorf("server: want %q, got %q", want, got)
		return false
	}
	return true
}

// startTLS upgrades the connection, server side.
func (p *peer) startTLS(cfg *tls.Config) bool {
	if p.r.Buffered() > 0 {
		p.t.Errorf("server: client sent data before the TLS handshake")
		return false
	}
	tc := tls.Server(p.conn, cfg)
	if err := tc.Handshake(); err != nil {
		p.t.Errorf("server: TLS handshake: %v", err)
		return false
	}
	p.conn, p.r = tc, bufio.NewReader(tc)
	return true
}

// drain reads until the client hangs up, and reports what it sent.
func (p *peer) drain() string {
	b, _ := io.ReadAll(p.r)
	return string(b)
}

// expectEOF checks that the client hangs up without sending anything more.
func (p *peer) expectEOF() {
	if rest := p.drain(); rest != "" {
		p.t.Errorf("server: client sent %q, want nothing", rest)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for Debug.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// countingDialer returns a dialer that counts its dials.
func countingDialer(n *atomic.Int32) *net.Dialer {
	return &net.Dialer{ControlContext: func(_ context.Context, _, _ string, _ syscall.RawConn) error {
		n.Add(1)
		return nil
	}}
}

// refusedAddr returns an address on which nothing listens.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// checkResult checks Verify's result against want, and that neither the error
// text nor the debug transcript holds the password.
func checkResult(t testing.TB, outcome Outcome, err error, want Outcome, password string, transcript string) *Error {
	t.Helper()
	if password != "" && strings.Contains(transcript, password) {
		t.Errorf("transcript contains the password:\n%s", transcript)
	}
	if outcome != want {
		t.Errorf("outcome = %v, want %v (err: %v)", outcome, want, err)
	}
	if want == OK {
		if err != nil {
			t.Errorf("err = %v, want nil", err)
		}
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %#v, want *Error", err)
	}
	if e.Outcome != outcome {
		t.Errorf("Error.Outcome = %v, returned outcome %v", e.Outcome, outcome)
	}
	if password != "" && strings.Contains(err.Error(), password) {
		t.Errorf("error text %q contains the password", err)
	}
	return e
}

// timeStamp is the elapsed time in front of each transcript line.
var timeStamp = regexp.MustCompile(`(?m)^ *[0-9]+\.[0-9]{3}ms `)

// withoutTimes is a transcript without its lines' times.
func withoutTimes(transcript string) string {
	return timeStamp.ReplaceAllString(transcript, "")
}
