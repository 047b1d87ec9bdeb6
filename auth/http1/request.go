// Package http1 is a small HTTP/1.x server (RFC 9112) for services that
// answer many tiny requests on short connections, as nginx's auth_http
// asks them: one GET with a few header fields per connection, read by a
// client that looks only at the response's header fields.
//
// It knows HTTP and nothing else. A Server reads a request head, keeps
// only the header fields its Fields names, hands the request to a Handler
// and writes the Handler's answer, header fields only, in one write.
// Requests for a few paths (metrics, health) can go to an ordinary
// net/http handler instead, and NetHTTP serves a Handler from net/http, so
// that the two servers can be compared on the same Handler.
package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode/utf8"
)

// Request is one request head, as a Server read it.
type Request struct {
	// Method and Target are the request line's method and request
	// target (RFC 9112 section 3).
	Method, Target string
	// HTTP11 is true for HTTP/1.1, false for HTTP/1.0.
	HTTP11 bool
	// Header holds the header fields the Server keeps.
	Header Header
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
}

// Field is one header field.
type Field struct {
	Name, Value string
}

// Header is the header fields of a request that a Server keeps, in the
// order they came, names as sent.
type Header []Field

// Get returns the value of the first field called name (compared without
// regard to case) and how many fields have that name. A field the Server
// does not keep reads as absent.
func (h Header) Get(name string) (value string, n int) {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			if n == 0 {
				value = f.Value
			}
			n++
		}
	}
	return value, n
}

// ErrHeadTooLarge is wrapped by the error for a request head larger than
// the Server's MaxHeaderBytes.
var ErrHeadTooLarge = errors.New("request head too large")

// errBadHead is wrapped by the errors for heads that are not HTTP/1.x.
var errBadHead = errors.New("malformed request head")

// headReader reads request heads from one connection.
type headReader struct {
	r *bufio.Reader
	// left is what the head being read may still take, in bytes.
	left int
}

// headInfo is what a head says about the connection, whatever fields
// are kept.
type headInfo struct {
	// hasBody: a Content-Length other than 0, or a Transfer-Encoding.
	hasBody bool
	// close: a Connection field with "close".
	close bool
}

// readRequestLine starts a head of at most maxBytes and reads its request
// line into req (RFC 9112 section 3). A connection closed before the first
// byte gives io.EOF.
func (hr *headReader) readRequestLine(req *Request, maxBytes int) error {
	hr.left = maxBytes
	line, err := hr.line()
	if err != nil {
		return err
	}
	return req.parseRequestLine(line)
}

// readFields reads the rest of the head (RFC 9112 section 5) into
// req.Header, reusing its storage, keeping only the fields named in keep
// (nil keeps all). A connection closed within the head gives
// io.ErrUnexpectedEOF.
func (hr *headReader) readFields(req *Request, keep []string) (headInfo, error) {
	var info headInfo
	req.Header = req.Header[:0]
	for {
		line, err := hr.line()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return info, err
		}
		if len(line) == 0 {
			return info, nil
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !validFieldName(name) {
			// Also refuses obsolete line folding (a leading space).
			return info, fmt.Errorf("%w: malformed header line %q", errBadHead, quote(line))
		}
		value = bytes.Trim(value, " \t")
		switch {
		case asciiEqualFold(name, "Content-Length"):
			info.hasBody = info.hasBody || !(len(value) == 1 && value[0] == '0')
		case asciiEqualFold(name, "Transfer-Encoding"):
			info.hasBody = true
		case asciiEqualFold(name, "Connection"):
			info.close = info.close || asciiEqualFold(value, "close")
		}
		if kept, ok := keptName(name, keep); ok {
			req.Header = append(req.Header, Field{kept, string(value)})
		}
	}
}

// keptName returns the name a header field is kept under: the name as
// given in keep (no copy of the request's bytes), or as sent when keep is
// nil and all fields are kept.
func keptName(name []byte, keep []string) (string, bool) {
	if keep == nil {
		return string(name), true
	}
	for _, f := range keep {
		if asciiEqualFold(name, f) {
			return f, true
		}
	}
	return "", false
}

// parseRequestLine parses "METHOD TARGET HTTP/1.x".
func (req *Request) parseRequestLine(line []byte) error {
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !validFieldName(method) {
		return fmt.Errorf("%w: malformed request line %q", errBadHead, quote(line))
	}
	switch string(proto) {
	case "HTTP/1.1":
		req.HTTP11 = true
	case "HTTP/1.0":
		req.HTTP11 = false
	default:
		return fmt.Errorf("%w: unsupported protocol %q", errBadHead, quote(proto))
	}
	req.Method, req.Target = string(method), string(target)
	return nil
}

// line returns one line of a head without its line end, charging its
// length to hr.left. The bytes are valid until the next read.
func (hr *headReader) line() ([]byte, error) {
	b, err := hr.r.ReadSlice('\n')
	hr.left -= len(b)
	if hr.left < 0 || err == bufio.ErrBufferFull {
		return nil, ErrHeadTooLarge
	}
	if err != nil {
		if len(b) == 0 && err == io.EOF {
			return nil, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimSuffix(b[:len(b)-1], []byte{'\r'}), nil
}

// validFieldName reports whether name is an RFC 9110 token.
func validFieldName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether b and s are equal, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// quote shortens bytes quoted in an error, so that a hostile request
// cannot flood a log.
func quote(b []byte) string {
	const max = 64
	if len(b) <= max {
		return string(b)
	}
	s := string(b[:max])
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// ReadRequest reads one request head from r, as a Server does: at most
// maxBytes in all, keeping only the header fields named in keep (nil
// keeps all). A connection closed before the first byte gives io.EOF, one
// closed within the head io.ErrUnexpectedEOF, a head over maxBytes an error
// wrapping ErrHeadTooLarge. r should have a buffer of at least 4 KiB: a
// longer line is refused as too large.
func ReadRequest(r *bufio.Reader, maxBytes int, keep []string) (*Request, error) {
	hr := headReader{r: r}
	req := &Request{}
	if err := hr.readRequestLine(req, maxBytes); err != nil {
		return nil, err
	}
	if _, err := hr.readFields(req, keep); err != nil {
		return nil, err
	}
	return req, nil
}
