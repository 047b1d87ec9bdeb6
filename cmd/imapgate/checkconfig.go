package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-envconfig"

	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/backend"
	"github.com/imapgate/imapgate/imapcheck"
)

// checkTimeout bounds each wait of -check-config on the network: one name
// lookup, one directory's answer.
const checkTimeout = 10 * time.Second

// liveCheck is a check -check-config makes beyond what a start checks:
// one that needs the network or another server, which a running imapgate
// leaves to its background probes (a directory down at start is a
// directory down, not a bad setting). It looks only at the parts of the
// settings that validated (the others are nil, and reported already) and
// returns its problems as setting errors.
type liveCheck func(ctx context.Context, s *settings) []error

// liveChecks run in this order, after validation. A server imapgate
// talks to gets its line here, as the setting that names it.
var liveChecks = []liveCheck{
	checkListenAddresses,
	checkBackendHosts,
	reachable("SQL_URL", "the SQL directory", pingDirectory(backend.RuleSQL)),
	reachable("LDAP_URL", "the LDAP directory", pingDirectory(backend.RuleLDAP)),
	reachable("STATE_URL", "the state store", pingStore),
}

// runCheckConfig is -check-config: the settings are read through lookuper
// and validated exactly as a start does it, then the variables of environ
// that are no setting and the liveChecks are looked at. It prints one
// line per problem, each starting with the variable's name (validation's
// in the order of the settings, then unknown variables by name, then the
// live checks in their order), and returns exitConfig; or it prints "ok"
// and returns 0. Nothing is bound or served.
func runCheckConfig(ctx context.Context, lookuper envconfig.Lookuper, environ []string, out io.Writer) int {
	s, err := loadSettings(ctx, lookuper, nil)
	defer s.closeDirectories()
	var problems []error
	if err != nil {
		problems = flatten(err)
	}
	problems = append(problems, unknownSettings(environ)...)
	for _, check := range liveChecks {
		problems = append(problems, check(ctx, s)...)
	}
	if len(problems) == 0 {
		fmt.Fprintln(out, "ok")
		return 0
	}
	for _, p := range problems {
		fmt.Fprintln(out, oneLine(p.Error()))
	}
	return exitConfig
}

// oneLine joins the lines of a multi-line error text (a driver's list of
// the addresses it tried, each on a line of its own) into one.
func oneLine(text string) string {
	var sb strings.Builder
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			continue
		case sb.Len() > 0 && strings.HasSuffix(sb.String(), ":"):
			sb.WriteString(" ")
		case sb.Len() > 0:
			sb.WriteString("; ")
		}
		sb.WriteString(line)
	}
	return sb.String()
}

// closeDirectories closes the directories validation opened (their pools).
func (s *settings) closeDirectories() {
	for _, d := range s.directories {
		d.Close()
	}
}

// flatten returns the errors errors.Join joined into err, at any depth,
// in order.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// unknownSettings reports the IMAPGATE_ variables of environ that are no
// setting: a start ignores them, so a misspelt one silently does nothing.
func unknownSettings(environ []string) []error {
	known := settingNames()
	for _, name := range secretSettings {
		known = append(known, name+"_FILE")
	}
	var unknown []string
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(key, envPrefix); ok && !slices.Contains(known, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	var errs []error
	for _, name := range slices.Compact(unknown) {
		msg := "not a setting: imapgate ignores it"
		if near := nearest(name, known); near != "" {
			msg += "; did you mean " + envPrefix + near + "?"
		}
		errs = append(errs, settingError(name, "%s", msg))
	}
	return errs
}

// nearest returns the name among known closest to name by edit distance,
// if it is close enough to be a typo of it.
func nearest(name string, known []string) string {
	best, bestDist := "", max(2, len(name)/4)+1
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkListenAddresses checks that the listen addresses are ones
// net.Listen takes, without binding them: the running imapgate holds them.
func checkListenAddresses(ctx context.Context, s *settings) []error {
	var errs []error
	check := checkListenAddr
	if path, ok := strings.CutPrefix(s.Listen, unixPrefix); ok {
		check = func(context.Context, string) error { return checkSocketPath(path) }
	}
	if err := check(ctx, s.Listen); err != nil {
		errs = append(errs, settingError("LISTEN", "%v", err))
	}
	if s.MetricsListen != "" {
		if err := checkListenAddr(ctx, s.MetricsListen); err != nil {
			errs = append(errs, settingError("METRICS_LISTEN", "%v", err))
		} else if s.MetricsListen == s.Listen {
			errs = append(errs, settingError("METRICS_LISTEN", "the same address as IMAPGATE_LISTEN: unset it to serve /metrics, /healthz and /readyz there"))
		}
	}
	if s.AdminListen != "" {
		if err := checkListenAddr(ctx, s.AdminListen); err != nil {
			errs = append(errs, settingError("ADMIN_LISTEN", "%v", err))
		} else if s.AdminListen == s.Listen || s.AdminListen == s.MetricsListen {
			errs = append(errs, settingError("ADMIN_LISTEN", "the same address as IMAPGATE_LISTEN or IMAPGATE_METRICS_LISTEN: unset it to serve the admin API on the operations listener"))
		}
	}
	return errs
}

// checkListenAddr checks host:port: the host empty (every address), an
// IP address or a name that resolves; the port a number or a service.
func checkListenAddr(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if _, err := net.DefaultResolver.LookupPort(ctx, "tcp", port); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); host == "" || err == nil {
		return nil
	}
	_, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	return err
}

// checkSocketPath checks the path of a unix socket to listen on: the
// socket is made at start, in a directory that must be there.
func checkSocketPath(path string) error {
	if path == "" {
		return errors.New("unix: names no socket path")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the socket's directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("the socket's directory %s is not a directory", dir)
	}
	return nil
}

// checkBackendHosts resolves every host of every backend, as the handler
// does for nginx's Auth-Server and the check does to connect.
func checkBackendHosts(ctx context.Context, s *settings) []error {
	r := &backend.Resolver{TTL: -1}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(s.backends)) {
		for _, host := range backendHosts(s.backends[name]) {
			ctx, cancel := context.WithTimeout(ctx, checkTimeout)
			_, err := r.Resolve(ctx, host)
			cancel()
			if err != nil {
				errs = append(errs, settingError("BACKENDS", "backend %q: %v", name, err))
			}
		}
	}
	return errs
}

// backendHosts returns the hosts nginx is sent to and the check connects
// to, each once, in order.
func backendHosts(b *backend.Backend) []string {
	var hosts []string
	for _, eps := range []map[imapcheck.Protocol]backend.Endpoint{b.Proxy, b.Check} {
		for _, ep := range eps {
			hosts = append(hosts, ep.Host)
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// reachable is the live check of a server that setting names: ping
// returns nil when it answers, or when it is not configured.
func reachable(setting, what string, ping func(ctx context.Context, s *settings) error) liveCheck {
	return func(ctx context.Context, s *settings) []error {
		ctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		if err := ping(ctx, s); err != nil {
			return []error{settingError(setting, "%s failed its check: %v", what, err)}
		}
		return nil
	}
}

// pingDirectory asks the directory of rule to answer, as its background
// probe does (its errors never hold its password).
func pingDirectory(rule string) func(ctx context.Context, s *settings) error {
	return func(ctx context.Context, s *settings) error {
		for _, d := range s.directories {
			if d.Name == rule {
				return d.Probe(ctx)
			}
		}
		return nil
	}
}

// pingStore asks the shared state store (IMAPGATE_STATE_URL) for a PING.
// A store that does not answer is not a reason not to start (imapgate
// keeps its limits in the process meanwhile), but an operator checking
// the configuration wants to know.
func pingStore(ctx context.Context, s *settings) error {
	if s.StateURL == "" {
		return nil
	}
	opts, err := state.ParseRedisURL(s.StateURL)
	if err != nil {
		return err // validate reported it already; not reached
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.Ping(ctx).Err()
}
