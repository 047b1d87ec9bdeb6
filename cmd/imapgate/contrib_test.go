package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/imapcheck"
)

// Files in contrib/ that the tests below check.
const (
	rulesFile     = "contrib/prometheus-rules.yml"
	rulesTestFile = "contrib/prometheus-rules.test.yml"
	dashboardFile = "contrib/grafana-dashboard.json"
	unitFile      = "contrib/imapgate.service"
)

// declaredSeries are series the contrib files may use although this build
// does not export them yet, each with the reason.
var declaredSeries = map[string]string{}

// testIP is the loopback address of what these tests start.
const testIP = "127.0.30.1"

// requireCommand skips the test when name is not installed, except under
// CI=true, where it fails: `make test` installs it (install-deps.sh).
func requireCommand(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is missing (Debian package %s; integration/install-deps.sh installs it)", name, debianPackage)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestPrometheusRules runs promtool's syntax check and the rules' own unit
// tests.
func TestPrometheusRules(t *testing.T) {
	promtool := requireCommand(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(rulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// imapgateBinary builds this package the way `make build` does, into a
// directory the test removes (the go command's cache makes the second
// build of a run a link only).
func imapgateBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imapgate")
	cmd := exec.Command("go", "build", "-buildvcs=auto", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestVersionFlag runs `imapgate -version`.
func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(imapgateBinary(t), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("imapgate -version: %v\n%s", err, out)
	}
	// Without VCS information (a git worktree, -buildvcs=false) version and
	// revision are "unknown"; with it, a module version and a 40-digit hash.
	re := regexp.MustCompile(`^imapgate (v\S+|unknown) revision ([0-9a-f]{40}|unknown)( \(modified\))? go1\.\S+ \S+/\S+\n$`)
	if !re.Match(out) {
		t.Errorf("imapgate -version printed %q, want a match of %s", out, re)
	}
}

// TestContribSeriesExist checks that every metric name in the alert rules
// and the Grafana dashboard is one that a real imapgate exports: it starts
// the built binary against a scripted IMAP backend, makes it answer a
// refused and a throttled login (series that appear only with traffic),
// and reads /metrics.
func TestContribSeriesExist(t *testing.T) {
	exported := scrapeAfterTraffic(t)
	check := func(file, where, expr string) {
		names, err := promqlMetricNames(expr)
		if err != nil {
			t.Errorf("%s: %s: %v", file, where, err)
			return
		}
		if len(names) == 0 {
			t.Errorf("%s: %s: no metric name in %q", file, where, expr)
		}
		for _, n := range names {
			if !exported[n] && declaredSeries[n] == "" {
				t.Errorf("%s: %s uses %s, which imapgate does not export", file, where, n)
			}
		}
	}

	rules, err := ruleExpressions(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	for alert, expr := range rules {
		check(rulesFile, "alert "+alert, expr)
	}

	exprs, err := dashboardExpressions(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 10 {
		t.Fatalf("%s: found only %d queries; is the JSON layout what dashboardExpressions reads?", dashboardFile, len(exprs))
	}
	for _, e := range exprs {
		check(dashboardFile, e.where, e.expr)
	}
}

// scrapeAfterTraffic starts imapgate with one scripted IMAP backend that
// refuses every password and at most one wrong password per user and
// network, sends it two wrong passwords for one user, and returns the set
// of metric names on /metrics.
func scrapeAfterTraffic(t *testing.T) map[string]bool {
	t.Helper()
	backend := startRefusingIMAP(t)
	addr := freeAddr(t)
	cmd := exec.Command(imapgateBinary(t))
	cmd.Env = []string{
		"IMAPGATE_LISTEN=" + addr,
		"IMAPGATE_BACKENDS=mailhost01=imap://" + backend,
		"IMAPGATE_DEFAULT_BACKEND=mailhost01",
		"IMAPGATE_LIMIT_PAIR=1",
		"IMAPGATE_PROBE_INTERVAL=100ms",
		// A state store nobody answers at: the shared-state series exist
		// (0, the limits kept in the process), as they do in production
		// while the store is down.
		"IMAPGATE_STATE_URL=redis://" + freeAddr(t) + "/0",
	}
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("imapgate did not stop cleanly: %v\n%s", err, log.String())
		}
	})
	base := "http://" + addr
	waitHTTP(t, base+pathReadyz, http.StatusOK)

	for i, pass := range []string{"wrong-1", "wrong-2"} {
		req, _ := http.NewRequest("GET", base+"/mail/auth.php", nil)
		for k, v := range map[string]string{
			"Auth-Method": "plain", "Auth-User": "alice", "Auth-Pass": pass, "Auth-Protocol": "imap",
			"Auth-Login-Attempt": fmt.Sprint(i + 1), "Client-IP": "192.0.2.7",
		} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The first is refused by the backend, the second by the limit.
		want := []string{auth.FailInvalid.Status(imapcheck.IMAP), auth.FailThrottled.Status(imapcheck.IMAP)}[min(i, 1)]
		if got := resp.Header.Get("Auth-Status"); got != want {
			t.Fatalf("login %d: Auth-Status %q, want %q", i+1, got, want)
		}
	}

	resp, err := http.Get(base + pathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	// The traffic above must have made the series it is for.
	for _, n := range []string{"imapgate_requests_total", "imapgate_throttled_total",
		"imapgate_backend_login_duration_seconds_bucket", "imapgate_backend_up", "imapgate_build_info",
		"imapgate_ready", "imapgate_check_slots"} {
		if !names[n] {
			t.Fatalf("/metrics has no %s after the test's traffic", n)
		}
	}
	return names
}

// freeAddr returns a free TCP address on testIP.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", testIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP waits until url answers with status.
func waitHTTP(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered %d (last: %v)", url, status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startRefusingIMAP serves a scripted IMAP server on testIP that greets,
// answers CAPABILITY and ID, refuses every LOGIN and AUTHENTICATE as a
// wrong password, and says goodbye to LOGOUT. It returns its address.
func startRefusingIMAP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", testIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveRefusingIMAP(conn) })
		}
	})
	return ln.Addr().String()
}

func serveRefusingIMAP(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] scripted server ready\r\n")
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		cmd, _, _ := strings.Cut(strings.ToUpper(rest), " ")
		var reply string
		switch cmd {
		case "CAPABILITY":
			reply = "* CAPABILITY IMAP4rev1 AUTH=PLAIN ID\r\n" + tag + " OK done\r\n"
		case "ID":
			reply = "* ID NIL\r\n" + tag + " OK done\r\n"
		case "LOGIN", "AUTHENTICATE":
			reply = tag + " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
		case "LOGOUT":
			io.WriteString(conn, "* BYE bye\r\n"+tag+" OK done\r\n")
			return
		default:
			reply = tag + " BAD unknown command\r\n"
		}
		if _, err := io.WriteString(conn, reply); err != nil {
			return
		}
	}
}

// ruleExpressions reads the alert rules file's expr fields by alert name.
// The file is YAML; this reads the two forms it uses (expr: on one line,
// or a "|" block of deeper-indented lines), and checks that every alert
// got exactly one expression, so a layout it does not know fails loudly.
func ruleExpressions(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	exprs := map[string]string{}
	alert := ""
	alerts := 0
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if name, ok := strings.CutPrefix(trimmed, "- alert:"); ok {
			alert = strings.TrimSpace(name)
			alerts++
			continue
		}
		value, ok := strings.CutPrefix(trimmed, "expr:")
		if !ok {
			continue
		}
		if alert == "" || exprs[alert] != "" {
			return nil, fmt.Errorf("%s:%d: expr outside an alert, or a second one", path, i+1)
		}
		value = strings.TrimSpace(value)
		if value == "|" || value == ">" {
			indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
			var block []string
			for i+1 < len(lines) {
				next := lines[i+1]
				if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
					break
				}
				block = append(block, next)
				i++
			}
			value = strings.Join(block, "\n")
		}
		exprs[alert] = value
	}
	if alerts == 0 || len(exprs) != alerts {
		return nil, fmt.Errorf("%s: %d alerts, %d expressions read", path, alerts, len(exprs))
	}
	return exprs, nil
}

// dashboardQuery is one PromQL expression of the dashboard and where it is.
type dashboardQuery struct{ where, expr string }

// dashboardExpressions reads every panel target's expr (rows' nested
// panels too) and every query variable's label_values(metric, label).
func dashboardExpressions(path string) ([]dashboardQuery, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []dashboardQuery
	var walk func([]json.RawMessage) error
	walk = func(raw []json.RawMessage) error {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				return err
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					return fmt.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				out = append(out, dashboardQuery{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dash.Panels); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]\w*\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				return nil, fmt.Errorf("%s: variable %s: %w", path, v.Name, err)
			}
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q.Query))
		if m == nil {
			return nil, fmt.Errorf("%s: variable %s: query %q is not label_values(metric, label)", path, v.Name, q.Query)
		}
		out = append(out, dashboardQuery{"variable " + v.Name, m[1]})
	}
	return out, nil
}

// TestDashboardReadsEveryExpression guards dashboardExpressions: the
// number of "expr" keys in the file is the number of queries it found,
// less the variables.
func TestDashboardReadsEveryExpression(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := dashboardExpressions(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	panels := slices.DeleteFunc(slices.Clone(exprs), func(q dashboardQuery) bool { return strings.HasPrefix(q.where, "variable ") })
	if n := strings.Count(string(b), `"expr":`); n != len(panels) {
		t.Errorf("%s has %d \"expr\" keys, dashboardExpressions read %d panel queries", dashboardFile, n, len(panels))
	}
}
