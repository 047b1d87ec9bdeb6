package http1

import (
	"net"
	"net/http"
	"net/netip"
)

// NetHTTP serves h from net/http, keeping the header fields named in
// fields (nil keeps all), as a Server would. It exists so that the two
// servers can be measured on the same Handler; net/http answers a request
// head it cannot parse itself, without asking h.
func NetHTTP(h Handler, fields []string) http.Handler {
	return netHTTP{h, fields}
}

type netHTTP struct {
	h      Handler
	fields []string
}

func (n netHTTP) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	req := &Request{Method: r.Method, Target: r.RequestURI, HTTP11: r.ProtoAtLeast(1, 1), RemoteAddr: remoteAddr(r.RemoteAddr)}
	for name, values := range r.Header {
		kept, ok := keptName([]byte(name), n.fields)
		if !ok {
			continue
		}
		for _, v := range values {
			req.Header = append(req.Header, Field{kept, v})
		}
	}
	var w ResponseWriter
	w.reset(responseSender{rw})
	n.h.Serve(r.Context(), &w, req)
	w.Send()
}

// responseSender sends an answer through a net/http ResponseWriter.
type responseSender struct{ rw http.ResponseWriter }

func (s responseSender) send(w *ResponseWriter) error {
	h := s.rw.Header()
	for _, f := range w.fields {
		h.Add(f.Name, f.Value)
	}
	h.Set("Content-Length", "0")
	s.rw.WriteHeader(w.code)
	if f, ok := s.rw.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// remoteAddr turns net/http's RemoteAddr string back into an address.
func remoteAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}
