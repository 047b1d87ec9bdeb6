package backend

import (
	"fmt"
	"strings"
	"sync"

	"github.com/imapgate/imapgate/imapcheck"
)

// maxAnswerHosts bounds the backends made for hosts that directories name
// (rather than backend names). Hosts come from the operator's directory,
// so there are few; the bound only keeps a directory full of distinct
// host names from growing memory without end.
const maxAnswerHosts = 1024

// answers turns a directory's answer, a backend name or a host, into a
// Backend. It is safe for concurrent use.
type answers struct {
	backends map[string]*Backend
	defaults Defaults

	mu    sync.Mutex
	hosts map[string]*Backend
}

func newAnswers(backends map[string]*Backend, d Defaults) *answers {
	d.Ports = d.Ports.withDefaults()
	return &answers{backends: backends, defaults: d, hosts: make(map[string]*Backend)}
}

// backend returns the backend value names: the backend of that name, else
// value as a host on the default ports (named after the host). An empty
// value (after trimming blanks) names none. A value that is neither is an
// *AnswerError quoting it.
func (a *answers) backend(value string) (*Backend, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil
	}
	if b, ok := a.backends[value]; ok {
		return b, nil
	}
	host, err := parseHost(value)
	if err != nil {
		if len(value) > 80 {
			value = value[:80] + "..."
		}
		return nil, &AnswerError{Msg: fmt.Sprintf("answer %q is neither a backend of IMAPGATE_BACKENDS nor a host: %v", value, err)}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if b, ok := a.hosts[host]; ok {
		return b, nil
	}
	p := a.defaults.Ports
	b := &Backend{
		Name: host,
		Proxy: map[imapcheck.Protocol]Endpoint{
			imapcheck.IMAP: {host, p.IMAP}, imapcheck.POP3: {host, p.POP3}, imapcheck.SMTP: {host, p.SMTP},
		},
		Check:    make(map[imapcheck.Protocol]Endpoint),
		CheckTLS: CheckTLS{Security: a.defaults.Security},
	}
	b.fillCheck(nil, nil, p, a.defaults.Security == imapcheck.SecurityTLS)
	if len(a.hosts) < maxAnswerHosts {
		a.hosts[host] = b
	}
	return b, nil
}
