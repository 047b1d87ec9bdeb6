package http1

import (
	"bytes"
	"net/http"
	"strconv"
)

// ResponseWriter collects the answer to one request: a status code and
// header fields, sent with an empty body.
type ResponseWriter struct {
	code   int
	fields []Field
	sent   bool
	err    error
	out    sender
}

// sender writes a finished answer: to a connection (Server) or to a
// net/http ResponseWriter (NetHTTP).
type sender interface {
	send(w *ResponseWriter) error
}

// reset makes w ready for the next request, keeping its storage.
func (w *ResponseWriter) reset(out sender) {
	w.code, w.fields, w.sent, w.err, w.out = http.StatusOK, w.fields[:0], false, nil, out
}

// Reset makes w ready for another answer that goes nowhere when sent: for
// calling a Handler directly, in tests and benchmarks.
func (w *ResponseWriter) Reset() { w.reset(nil) }

// WriteHeader sets the status code (200 unless set). It has no effect once
// the answer is sent.
func (w *ResponseWriter) WriteHeader(code int) {
	if !w.sent {
		w.code = code
	}
}

// Add adds a header field to the answer. Names and values must not hold
// CR or LF; the caller's own, fixed texts are expected. It has no effect
// once the answer is sent.
func (w *ResponseWriter) Add(name, value string) {
	if !w.sent {
		w.fields = append(w.fields, Field{name, value})
	}
}

// Send sends the answer now, so that work after it (a log line) does not
// delay the client. The Server sends it anyway when the Handler returns;
// only the first Send sends, and later ones return its error.
func (w *ResponseWriter) Send() error {
	if !w.sent {
		w.sent = true
		if w.out != nil {
			w.err = w.out.send(w)
		}
	}
	return w.err
}

// Fields returns the header fields added so far, for tests and adapters.
func (w *ResponseWriter) Fields() []Field { return w.fields }

// Code returns the status code.
func (w *ResponseWriter) Code() int { return w.code }

// writeHead writes w as an HTTP/1.1 response head with no body.
func (w *ResponseWriter) writeHead(out *bytes.Buffer, keepAlive bool) {
	out.WriteString("HTTP/1.1 ")
	out.WriteString(strconv.Itoa(w.code))
	out.WriteByte(' ')
	out.WriteString(http.StatusText(w.code))
	out.WriteString("\r\n")
	for _, f := range w.fields {
		out.WriteString(f.Name)
		out.WriteString(": ")
		out.WriteString(f.Value)
		out.WriteString("\r\n")
	}
	out.WriteString("Content-Length: 0\r\n")
	if !keepAlive {
		out.WriteString("Connection: close\r\n")
	}
	out.WriteString("\r\n")
}
