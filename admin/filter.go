package admin

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/imapgate/imapgate/auth/state"
)

// filter picks records: by user (as the limits fold it), by network (the
// records whose network lies inside it), or both; an empty filter picks
// every record.
type filter struct {
	user    string
	network netip.Prefix
}

// parseFilter reads a filter; network is a CIDR network or an address,
// which stands for its client network (a /24, a /48) as the limits count.
func parseFilter(user, network string) (filter, error) {
	f := filter{user: strings.ToLower(strings.TrimSpace(user))}
	if network == "" {
		return f, nil
	}
	if !strings.Contains(network, "/") {
		ip, err := netip.ParseAddr(network)
		if err != nil {
			return f, fmt.Errorf("network: %q is not an address or a CIDR network", network)
		}
		f.network = state.NetworkOf(ip)
		return f, nil
	}
	p, err := netip.ParsePrefix(network)
	if err != nil {
		return f, fmt.Errorf("network: %q is not an address or a CIDR network", network)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	f.network = p.Masked()
	return f, nil
}

// errNoTarget refuses a lift that names nothing: lifting every block at
// once is a restart's job, not a typo's.
var errNoTarget = errors.New("name a user, a network, or both")

func (f filter) empty() bool { return f.user == "" && !f.network.IsValid() }

// String is the filter as an audit line's target.
func (f filter) String() string {
	var parts []string
	if f.user != "" {
		parts = append(parts, "user="+f.user)
	}
	if f.network.IsValid() {
		parts = append(parts, "network="+f.network.String())
	}
	return strings.Join(parts, " ")
}

// picks reports whether f picks r.
func (f filter) picks(r state.Record) bool {
	if f.user != "" && r.User != f.user {
		return false
	}
	if f.network.IsValid() {
		n := r.Network
		if !n.IsValid() || n.Bits() < f.network.Bits() || !f.network.Contains(n.Addr()) {
			return false
		}
	}
	return true
}

// liftable reports whether a lift by f forgets r: the counts f picks,
// never an owner mark (that spares the owner; it is not a block), and
// with both a user and a network only the pair's count.
func (f filter) liftable(r state.Record) bool {
	if r.Kind == state.Owner || !f.picks(r) {
		return false
	}
	return f.user == "" || !f.network.IsValid() || r.Kind == state.Pair
}

// sortRecords orders records for the operator: blocks first, then by
// kind, user and network.
func sortRecords(recs []state.Record) {
	slices.SortFunc(recs, func(a, b state.Record) int {
		if a.Blocked != b.Blocked {
			if a.Blocked {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), strings.Compare(a.User, b.User),
			strings.Compare(a.Network.String(), b.Network.String()))
	})
}

// plural is "1 record", "2 records".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// errorf is fmt.Errorf, for the API's messages.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
