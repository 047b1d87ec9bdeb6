package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultResolveTTL is how long a Resolver remembers an answer when its
// TTL field is zero.
const DefaultResolveTTL = 30 * time.Second

// maxResolveCache bounds the cache. Hosts come from the configuration, so
// the bound is never reached in practice; it only keeps a misuse with
// arbitrary names from growing memory without end.
const maxResolveCache = 1024

// Resolver turns an Endpoint's Host into the literal IP address nginx
// needs in Auth-Server (nginx does not resolve that header). The zero
// value is ready to use and safe for concurrent use.
//
// Answers are cached for TTL; failures are not, so that a backend whose
// name stops resolving for a moment is retried at the next login.
type Resolver struct {
	// Resolver does the lookups; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// TTL is how long an answer is reused: zero means DefaultResolveTTL,
	// negative disables the cache. DNS TTLs are not available from the
	// standard library, so this is a fixed bound on staleness.
	TTL time.Duration

	// lookup and now replace the network and the clock in tests.
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]resolved
}

// resolved is a cached answer.
type resolved struct {
	addr    netip.Addr
	expires time.Time
}

// Resolve returns the IP address for host. An IP literal (IPv6 with or
// without brackets) is returned as is, with IPv4-mapped IPv6 unmapped;
// literals with a zone are refused, as nginx cannot use them. A name is
// looked up within ctx's deadline; of its addresses the first IPv4 one is
// returned, else the first one. IPv4 is preferred so that a dual-stack
// backend gets the same family on every host, whatever order the resolver
// sorts A and AAAA answers in (RFC 6724 sorting depends on the local
// addresses); taking the first address of the family keeps DNS round
// robin working.
func (r *Resolver) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	lit := host
	if strings.HasPrefix(lit, "[") && strings.HasSuffix(lit, "]") {
		lit = lit[1 : len(lit)-1]
	}
	if addr, err := netip.ParseAddr(lit); err == nil {
		if addr.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("resolve %q: IPv6 zones are not supported", host)
		}
		return addr.Unmap(), nil
	}
	if host == "" {
		return netip.Addr{}, errors.New("resolve: empty host")
	}

	if addr, ok := r.cached(host); ok {
		return addr, nil
	}
	addrs, err := r.lookupFunc()(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %q: %w", host, err)
	}
	addr, ok := pickAddr(addrs)
	if !ok {
		return netip.Addr{}, fmt.Errorf("resolve %q: no addresses", host)
	}
	r.store(host, addr)
	return addr, nil
}

// pickAddr returns the first IPv4 address, else the first usable one.
func pickAddr(addrs []netip.Addr) (netip.Addr, bool) {
	var first netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" {
			continue
		}
		if a.Is4() {
			return a, true
		}
		if !first.IsValid() {
			first = a
		}
	}
	return first, first.IsValid()
}

// lookupFunc returns the function that resolves names.
func (r *Resolver) lookupFunc() func(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if r.lookup != nil {
		return r.lookup
	}
	if r.Resolver != nil {
		return r.Resolver.LookupNetIP
	}
	return net.DefaultResolver.LookupNetIP
}

// ttl returns the cache lifetime, zero when caching is off.
func (r *Resolver) ttl() time.Duration {
	switch {
	case r.TTL == 0:
		return DefaultResolveTTL
	case r.TTL < 0:
		return 0
	default:
		return r.TTL
	}
}

// clock returns the current time.
func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// cached returns a fresh cached answer for host.
func (r *Resolver) cached(host string) (netip.Addr, bool) {
	if r.ttl() == 0 {
		return netip.Addr{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[host]
	if !ok || !r.clock().Before(e.expires) {
		return netip.Addr{}, false
	}
	return e.addr, true
}

// store caches addr for host.
func (r *Resolver) store(host string, addr netip.Addr) {
	ttl := r.ttl()
	if ttl == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	if r.cache == nil {
		r.cache = make(map[string]resolved)
	}
	if len(r.cache) >= maxResolveCache {
		for h, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, h)
			}
		}
		if len(r.cache) >= maxResolveCache {
			clear(r.cache)
		}
	}
	r.cache[host] = resolved{addr, now.Add(ttl)}
}
