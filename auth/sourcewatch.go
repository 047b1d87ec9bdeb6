package auth

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
)

// What the source watch looks for: a window of logins most of which come
// from one private address, for several users. One user's phone retrying
// on a LAN is not it; nginx that passes its own peer, the Docker bridge's
// gateway or a proxy's address for everyone is.
const (
	sourceWindow   = 100 // logins per window
	sourceShare    = 80  // percent of a window's logins, exceeded
	sourceMinUsers = 5   // distinct users from that address, at least
	sourceSlots    = 4   // private addresses tracked at once
)

// sourceWatch notices, once per process, that most logins come from one
// private address: nginx is then not passing the clients' own addresses,
// and the per-network guessing limits treat every user as one network.
// The zero value is ready and safe for concurrent use.
//
// It counts windows of sourceWindow logins. Their private (and loopback
// and link-local) addresses outside the trusted networks are counted in a
// Misra–Gries summary of sourceSlots counters: an address with more than
// a fifth of the window is sure to hold a counter at the end, and its
// counter is never above its true count, so the watch never overstates a
// share. Each counter keeps up to sourceMinUsers distinct users, by hash.
// Everything lives in fixed arrays, so a login allocates nothing; once it
// has warned, a login costs one atomic load.
type sourceWatch struct {
	warned atomic.Bool

	mu     sync.Mutex
	seed   maphash.Seed
	logins int
	slots  [sourceSlots]sourceSlot
}

// sourceSlot is one tracked address; it is free when count is 0.
type sourceSlot struct {
	addr   netip.Addr
	count  int
	users  [sourceMinUsers]uint64
	nusers int
}

// sourceFinding is the window that tripped the watch.
type sourceFinding struct {
	addr   netip.Addr
	logins int // from addr (at least)
	of     int // in the window
}

// observe counts one login of user from ip, and returns the finding the
// one time a window trips the watch.
func (w *sourceWatch) observe(ip netip.Addr, user string, trusted []netip.Prefix) (sourceFinding, bool) {
	if w.warned.Load() {
		return sourceFinding{}, false
	}
	ip = ip.Unmap()
	suspect := privateSource(ip, trusted)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.warned.Load() {
		return sourceFinding{}, false
	}
	w.logins++
	if suspect {
		if w.seed == (maphash.Seed{}) {
			w.seed = maphash.MakeSeed()
		}
		var u uint64
		if user != "" {
			u = maphash.String(w.seed, user)
		}
		w.count(ip, u)
	}
	if w.logins < sourceWindow {
		return sourceFinding{}, false
	}
	top := w.slots[0]
	for _, s := range w.slots[1:] {
		if s.count > top.count {
			top = s
		}
	}
	f := sourceFinding{addr: top.addr, logins: top.count, of: w.logins}
	w.logins, w.slots = 0, [sourceSlots]sourceSlot{}
	if f.logins*100 <= sourceShare*f.of || top.nusers < sourceMinUsers {
		return sourceFinding{}, false
	}
	w.warned.Store(true)
	return f, true
}

// count adds a login from ip by the user hashed to u (0: no user) to the
// summary: its counter, else a free one, else one off every counter.
func (w *sourceWatch) count(ip netip.Addr, u uint64) {
	free := -1
	for i := range w.slots {
		s := &w.slots[i]
		if s.count > 0 && s.addr == ip {
			s.count++
			s.addUser(u)
			return
		}
		if s.count == 0 && free < 0 {
			free = i
		}
	}
	if free >= 0 {
		w.slots[free] = sourceSlot{addr: ip, count: 1}
		w.slots[free].addUser(u)
		return
	}
	for i := range w.slots {
		w.slots[i].count--
	}
}

// addUser remembers u among the slot's distinct users, up to
// sourceMinUsers of them.
func (s *sourceSlot) addUser(u uint64) {
	if u == 0 || s.nusers == len(s.users) {
		return
	}
	for _, seen := range s.users[:s.nusers] {
		if seen == u {
			return
		}
	}
	s.users[s.nusers] = u
	s.nusers++
}

// privateSource reports whether ip is an address no mail client on the
// internet has, outside the trusted networks (a webmail of the operator's
// own is expected to log everyone in from one address).
func privateSource(ip netip.Addr, trusted []netip.Prefix) bool {
	if !ip.IsPrivate() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// watchSources feeds one answered request to the source watch, and logs
// its finding, once, loudly.
func (h *Handler) watchSources(req Request) {
	var trusted []netip.Prefix
	if h.Limits != nil {
		trusted = h.Limits.Trusted
	}
	f, tripped := h.sources.observe(req.ClientIP, req.User, trusted)
	if !tripped {
		return
	}
	h.logger().Warn("most logins come from one private address: nginx is not passing the clients' own addresses",
		"client", f.addr.String(), "logins", f.logins, "of", f.of,
		"consequence", "the per-network guessing limits count every user as one network, so one guesser can lock everyone out",
		"fix", "let nginx see each client (no Docker port mapping or TCP proxy in front of it; behind a proxy, proxy_protocol and set_real_ip_from in nginx's mail block); if this address is a webmail or proxy of your own, list it in IMAPGATE_TRUSTED_NETWORKS")
}
