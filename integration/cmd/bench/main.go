// Command bench measures imapgate against what it stands between, on this
// machine, and prints a markdown table:
//
//   - cached answer: requests/s of imapgate answering from its cache vs
//     nginx's own `return 204` auth location with the same headers, a new
//     connection per request as nginx makes them (wrk, c=32);
//   - check latency: imapgate's cache-miss check vs a raw IMAP LOGIN+LOGOUT
//     to the same Dovecot from the same client, p50 and p99, c=1 and c=8;
//   - end to end: IMAP logins/s through nginx's mail proxy asking imapgate
//     (cache warm, cache off) vs asking nginx's `return 204`;
//   - backend logins per client login: 100 users logging in again and again
//     within the cache TTL, counted in Dovecot's own log;
//   - memory: imapgate's peak RSS (VmHWM) with 1,000 checks in flight;
//   - resilience: peak RSS while checking logins on backends that never
//     stop sending, and under 24,000 slow connections against 20,000
//     descriptors, with cached logins asked meanwhile.
//
// Each comparison runs both sides in the same run, interleaved (A, B, A, B,
// ...) for several rounds, and reports medians; the cached answer's sides
// take turns at going first (roundOrder). Dovecot runs as processes
// (IMAPGATE_IT_DOVECOT=process) unless IMAPGATE_IT_DOVECOT says otherwise:
// a container's port proxy would add its own cost to every login.
//
//	go run ./integration/cmd/bench          (make bench)
//	go run ./integration/cmd/bench -rounds 3 -wrk-duration 3s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the bench's processes (the scenarios use 127.0.0.2-7,
// 127.0.1.x and 127.0.2.x).
const (
	ipBackend   = "127.0.0.9"  // Dovecot with the generated accounts
	ipWarm      = "127.0.3.1"  // imapgate with a long cache TTL + its nginx
	ipCold      = "127.0.3.2"  // imapgate with the cache off + its nginx
	ip204       = "127.0.3.3"  // nginx `return 204` + the nginx that asks it
	ipSteady    = "127.0.3.4"  // imapgate with the default TTL + its nginx
	ipNetHTTP   = "127.0.3.20" // imapgate on net/http, cache TTL as ipWarm
	ipPHP       = "127.0.3.21" // the PHP seed (nginx + php-fpm) + the nginx that asks it
	ipMemory    = "127.0.3.5"  // imapgate of the memory figure
	addrSlowIMP = "127.0.3.6:10143"
)

type config struct {
	rounds      int
	wrkDuration time.Duration
	wrkConns    int
	wrkThreads  int
	latDuration time.Duration
	latMax      int
	e2eDuration time.Duration
	e2eConc     int
	users       int
	steadyPass  int
	steadyConc  int
	memConc     int
	memRounds   int
	memHold     time.Duration
	guessEvery  time.Duration
	only        map[string]bool // figures to measure; empty: all
	extraEnv    map[string]string
}

// figures are the parts of the run, in order, as -only names them.
var figures = []string{"cached", "latency", "e2e", "steady", "memory", "penalty", "guessing", "flood", "shared", "resilience", "unix", "growth", "sql"}

func (c config) want(figure string) bool { return len(c.only) == 0 || c.only[figure] }

func main() {
	var cfg config
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds of each interleaved comparison")
	flag.DurationVar(&cfg.wrkDuration, "wrk-duration", 5*time.Second, "length of one wrk run (whole seconds)")
	flag.IntVar(&cfg.wrkConns, "wrk-conns", 32, "wrk connections (concurrent requests)")
	flag.IntVar(&cfg.wrkThreads, "wrk-threads", 2, "wrk threads")
	flag.DurationVar(&cfg.latDuration, "latency-duration", 2*time.Second, "length of one check-latency run")
	flag.IntVar(&cfg.latMax, "latency-max", 2000, "most checks per worker in one check-latency run")
	flag.DurationVar(&cfg.e2eDuration, "e2e-duration", 3*time.Second, "length of one end-to-end run")
	flag.IntVar(&cfg.e2eConc, "e2e-conc", 8, "concurrent IMAP clients end to end")
	flag.IntVar(&cfg.users, "users", 100, "accounts of the bench Dovecot (users of the steady workload)")
	flag.IntVar(&cfg.steadyPass, "steady-logins", 5, "logins per user in the steady workload, after a first one")
	flag.IntVar(&cfg.steadyConc, "steady-conc", 8, "concurrent IMAP clients in the steady workload")
	flag.IntVar(&cfg.memConc, "mem-conc", 1000, "concurrent requests of the memory figure")
	flag.IntVar(&cfg.memRounds, "mem-rounds", 3, "memory rounds (a fresh imapgate each)")
	flag.DurationVar(&cfg.memHold, "mem-hold", 300*time.Millisecond, "how long the memory figure holds the checks once all are in flight (longer: time to take a heap profile)")
	flag.DurationVar(&cfg.guessEvery, "guess-every", 50*time.Millisecond, "pace of each of the guessing figure's 96 concurrent guessers")
	only := flag.String("only", "", "comma-separated figures to measure: "+strings.Join(figures, ",")+" (default all)")
	cfg.extraEnv = map[string]string{}
	flag.Func("env", "KEY=VALUE added to every imapgate's environment (GOGC, GOMEMLIMIT, GODEBUG, IMAPGATE_*); repeatable", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return errors.New("want KEY=VALUE")
		}
		cfg.extraEnv[k] = v
		return nil
	})
	flag.Parse()
	cfg.only = map[string]bool{}
	for f := range strings.SplitSeq(*only, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(figures, f) {
			fmt.Fprintf(os.Stderr, "bench: -only %s: want some of %s\n", f, strings.Join(figures, ","))
			os.Exit(2)
		}
		cfg.only[f] = true
	}
	if cfg.rounds < 1 || cfg.users < 8 || cfg.e2eConc < 1 || cfg.memConc < 1 || cfg.memRounds < 1 ||
		cfg.wrkDuration < time.Second || cfg.users < cfg.e2eConc {
		fmt.Fprintln(os.Stderr, "bench: bad flags")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		var missing *harness.MissingError
		if errors.As(err, &missing) {
			fmt.Fprintln(os.Stderr, "bench: install what is missing with: sudo integration/install-deps.sh (make deps); wrk: apt-get install wrk")
		}
		os.Exit(1)
	}
}

var (
	logMu   sync.Mutex
	lastLog string
)

// logf prints progress on standard error, once for a message repeated
// (the harness says "waiting" every 200 ms while another run holds the lock).
func logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logMu.Lock()
	defer logMu.Unlock()
	if msg == lastLog {
		return
	}
	lastLog = msg
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), msg)
}

// bench holds the running pieces.
type bench struct {
	cfg      config
	env      *harness.Env
	backend  *harness.Backend
	accounts []dovecot.Account
	barrier  dovecot.Account
	stops    []func()

	warm, cold, steady *harness.Process
	netHTTP            *harness.Process
	nginx204           *harness.Process
	mailWarm, mailCold *harness.MailProxy
	mail204, mailStdy  *harness.MailProxy
	mailPHP            *harness.MailProxy
}

func run(cfg config) (err error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return &harness.MissingError{What: "wrk (apt-get install wrk)"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	mode := os.Getenv(harness.EnvMode)
	if mode == "" {
		mode = harness.ModeProcess
	}
	startCtx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	env, err := harness.Start(startCtx, harness.Options{Mode: mode, Logf: logf})
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, env: env}
	defer func() {
		for i := len(b.stops) - 1; i >= 0; i-- {
			b.stops[i]()
		}
		if cerr := env.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := b.start(startCtx); err != nil {
		return err
	}
	logf("everything up in %v", time.Since(began).Round(time.Millisecond))

	var r report
	r.machine = machine(env)
	r.command = strings.Join(append([]string{"go run ./integration/cmd/bench"}, os.Args[1:]...), " ")
	for _, f := range []struct {
		name, title string
		run         func(context.Context, *report) error
	}{
		{"cached", "cached answer", b.cachedAnswer},
		{"latency", "check latency", b.checkLatency},
		{"e2e", "end to end", b.endToEnd},
		{"steady", "steady workload", b.steadyWorkload},
		{"memory", "memory", b.memory},
		{"penalty", "Dovecot's auth penalty", b.penalty},
		{"guessing", "guessing under Dovecot's penalty", b.guessing},
		{"flood", "flood of unrelated wrong logins", b.flood},
		{"shared", "shared state", b.shared},
		{"resilience", "hostile backends and a connection flood", b.resilience},
		{"unix", "unix socket", b.unixSocket},
		{"growth", "cost growth with the user base", b.growth},
		{"sql", "100,000 users in SQL", b.sqlLogins},
	} {
		if !cfg.want(f.name) {
			continue
		}
		if err := f.run(ctx, &r); err != nil {
			return fmt.Errorf("%s: %w", f.title, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.took = time.Since(began)
	r.print(os.Stdout, cfg)
	return nil
}

func (b *bench) addStop(p *harness.Process) {
	b.stops = append(b.stops, func() {
		if err := p.Stop(15 * time.Second); err != nil {
			logf("stopping %s: %v", p.Name, err)
		}
	})
}

// start brings up the Dovecot with generated accounts, three imapgates, the
// `return 204` nginx and four mail proxies, and checks each answers.
func (b *bench) start(ctx context.Context) error {
	b.accounts = harness.GenerateAccounts("bench", b.cfg.users)
	b.barrier = harness.GenerateAccounts("barrier", 1)[0]
	be, err := b.env.StartAccountsBackend(ctx, "benchhost", ipBackend, append(b.accounts[:len(b.accounts):len(b.accounts)], b.barrier))
	if err != nil {
		return err
	}
	b.backend = be
	logf("dovecot benchhost on %s with %d accounts", ipBackend, len(b.accounts))

	imapgate := func(name, ip string, extra map[string]string) (*harness.Process, error) {
		settings := map[string]string{
			"IMAPGATE_BACKENDS":        "bench=" + ipBackend,
			"IMAPGATE_DEFAULT_BACKEND": "bench",
		}
		for k, v := range extra {
			settings[k] = v
		}
		for k, v := range b.cfg.extraEnv {
			settings[k] = v
		}
		p, err := b.env.StartImapgate(ctx, name, ip+":9180", settings)
		if err != nil {
			return nil, err
		}
		b.addStop(p)
		return p, nil
	}
	if b.warm, err = imapgate("imapgate-warm", ipWarm, map[string]string{"IMAPGATE_CACHE_TTL": "24h"}); err != nil {
		return err
	}
	// The same as warm on the standard library's HTTP server: the cached
	// answer shows whether imapgate's own server still earns its keep.
	if b.netHTTP, err = imapgate("imapgate-nethttp", ipNetHTTP, map[string]string{"IMAPGATE_CACHE_TTL": "24h", "IMAPGATE_HTTP_SERVER": "net/http"}); err != nil {
		return err
	}
	if b.cold, err = imapgate("imapgate-cold", ipCold, map[string]string{"IMAPGATE_CACHE_TTL": "0"}); err != nil {
		return err
	}
	// The product's default TTL (5m): the run is far shorter.
	if b.steady, err = imapgate("imapgate-steady", ipSteady, nil); err != nil {
		return err
	}
	// worker_processes auto: nginx may use every core, as imapgate may.
	if b.nginx204, err = b.env.StartNginx204(ctx, "nginx-204", ip204+":9180", "auto", ipBackend, 143); err != nil {
		return err
	}
	b.addStop(b.nginx204)
	fpm, phpNginx, err := b.env.StartPHPSeed(ctx, "php-seed", ipPHP+":9180", ipBackend)
	if err != nil {
		return err
	}
	b.addStop(fpm)
	b.addStop(phpNginx) // stops run last to first: nginx, then php-fpm
	mail := func(name, ip string) (*harness.MailProxy, error) {
		m, err := b.env.StartMailProxy(ctx, name, ip, ip+":9180")
		if err != nil {
			return nil, err
		}
		b.addStop(m.Nginx)
		return m, nil
	}
	if b.mailWarm, err = mail("mail-warm", ipWarm); err != nil {
		return err
	}
	if b.mailCold, err = mail("mail-cold", ipCold); err != nil {
		return err
	}
	if b.mail204, err = mail("mail-204", ip204); err != nil {
		return err
	}
	if b.mailStdy, err = mail("mail-steady", ipSteady); err != nil {
		return err
	}
	if b.mailPHP, err = mail("mail-php", ipPHP); err != nil {
		return err
	}

	// Each path answers a login before anything is measured.
	a := b.accounts[0]
	for _, addr := range []string{ipWarm + ":9180", ipNetHTTP + ":9180", ipCold + ":9180", ip204 + ":9180", ipPHP + ":9180"} {
		if err := authOK(addr, authRequestBytes(addr, a.User, a.Password)); err != nil {
			return fmt.Errorf("auth_http %s: %w", addr, err)
		}
	}
	if status, err := authOnce(ipCold+":9180", authRequestBytes(ipCold, a.User, a.Password+"x")); err != nil || status == "OK" {
		return fmt.Errorf("imapgate accepted a wrong password (%q, %v): the bench would measure nothing", status, err)
	}
	for _, addr := range []string{be.IMAPAddr(), b.mailWarm.IMAPAddr, b.mailCold.IMAPAddr, b.mail204.IMAPAddr} {
		if err := imapLogin(addr, a.User, a.Password); err != nil {
			return fmt.Errorf("IMAP login at %s: %w", addr, err)
		}
	}
	return nil
}

// userFor returns the account worker w of conc uses for its i-th operation:
// workers never share a user, so that imapgate cannot coalesce two
// concurrent checks into one backend login (a raw client could not).
func (b *bench) userFor(w, conc, i int) dovecot.Account {
	per := len(b.accounts) / conc
	return b.accounts[w+conc*(i%per)]
}

// cachedAnswer: wrk against imapgate (cache warm) and nginx's `return 204`.
func (b *bench) cachedAnswer(ctx context.Context, r *report) error {
	a := b.accounts[0]
	igAddr, ngAddr, nhAddr := ipWarm+":9180", ip204+":9180", ipNetHTTP+":9180"
	for _, addr := range []string{igAddr, nhAddr} {
		if err := authOK(addr, authRequestBytes(addr, a.User, a.Password)); err != nil {
			return err
		}
	}
	igScript, err := wrkScript(b.env.Dir, "imapgate", authRequestBytes(ipWarm, a.User, a.Password))
	if err != nil {
		return err
	}
	nhScript, err := wrkScript(b.env.Dir, "nethttp", authRequestBytes(ipNetHTTP, a.User, a.Password))
	if err != nil {
		return err
	}
	phpScript, err := wrkScript(b.env.Dir, "php", authRequestBytes(ipPHP, a.User, a.Password))
	if err != nil {
		return err
	}
	ngScript, err := wrkScript(b.env.Dir, "nginx204", authRequestBytes(ip204, a.User, a.Password))
	if err != nil {
		return err
	}
	sides := []struct {
		name, script, url string
		into              *[]float64
	}{
		{"imapgate", igScript, "http://" + igAddr + "/mail/auth.php", &r.cachedIG},
		{"nginx 204", ngScript, "http://" + ngAddr + "/mail/auth.php", &r.cachedNginx},
		{"net/http", nhScript, "http://" + nhAddr + "/mail/auth.php", &r.cachedNetHTTP},
		{"PHP seed", phpScript, "http://" + ipPHP + ":9180/mail/auth.php", &r.cachedPHP},
	}
	// One unmeasured second each first: imapgate's first run after its
	// start measured up to a third below its next ones (its heap and
	// memory limit still settling), at whatever commit; a warm nginx
	// against a cold imapgate compares nothing.
	for _, side := range sides {
		if _, err := runWrk(ctx, side.script, side.url, b.cfg.wrkThreads, b.cfg.wrkConns, time.Second); err != nil {
			return err
		}
	}
	hitsBefore, err := metric(igAddr, `imapgate_cache_lookups_total{result="hit"}`)
	if err != nil {
		return err
	}
	var igRequests int
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, i := range roundOrder(len(sides), round) {
			side := sides[i]
			res, err := runWrk(ctx, side.script, side.url, b.cfg.wrkThreads, b.cfg.wrkConns, b.cfg.wrkDuration)
			if err != nil {
				return err
			}
			if res.errors != "" {
				r.notes = append(r.notes, fmt.Sprintf("cached answer round %d, %s: wrk reported %s", round, side.name, res.errors))
			}
			if side.name == "imapgate" {
				igRequests += res.requests
			}
			*side.into = append(*side.into, res.rps)
			logf("cached answer round %d/%d: %-9s %8.0f req/s", round, b.cfg.rounds, side.name, res.rps)
		}
	}
	hitsAfter, err := metric(igAddr, `imapgate_cache_lookups_total{result="hit"}`)
	if err != nil {
		return err
	}
	r.cachedHits = int(hitsAfter - hitsBefore)
	r.cachedRequests = igRequests
	return nil
}

// checkLatency: imapgate with the cache off vs a raw LOGIN to the same
// Dovecot, from the same process, at each concurrency.
func (b *bench) checkLatency(ctx context.Context, r *report) error {
	addr := ipCold + ":9180"
	reqs := make([][]byte, len(b.accounts))
	for i, a := range b.accounts {
		reqs[i] = authRequestBytes(ipCold, a.User, a.Password)
	}
	index := map[string]int{}
	for i, a := range b.accounts {
		index[a.User] = i
	}
	r.latency = map[int]*latencyFigures{}
	for _, conc := range []int{1, 8} {
		r.latency[conc] = &latencyFigures{}
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, conc := range []int{1, 8} {
			f := r.latency[conc]
			ig := closedLoop(conc, b.cfg.latDuration, b.cfg.latMax, func(w, i int) error {
				return authOK(addr, reqs[index[b.userFor(w, conc, i).User]])
			})
			raw := closedLoop(conc, b.cfg.latDuration, b.cfg.latMax, func(w, i int) error {
				a := b.userFor(w, conc, i)
				return imapLogin(b.backend.IMAPAddr(), a.User, a.Password)
			})
			for _, s := range []struct {
				name string
				l    load
			}{{"imapgate", ig}, {"raw LOGIN", raw}} {
				if s.l.fails > 0 {
					return fmt.Errorf("%s at c=%d: %d of %d failed, first: %v", s.name, conc, s.l.fails, s.l.fails+len(s.l.lat), s.l.firstEr)
				}
				if len(s.l.lat) == 0 {
					return fmt.Errorf("%s at c=%d: nothing completed", s.name, conc)
				}
			}
			f.igP50 = append(f.igP50, ms(percentile(ig.lat, 50)))
			f.igP99 = append(f.igP99, ms(percentile(ig.lat, 99)))
			f.rawP50 = append(f.rawP50, ms(percentile(raw.lat, 50)))
			f.rawP99 = append(f.rawP99, ms(percentile(raw.lat, 99)))
			f.igN += len(ig.lat)
			f.rawN += len(raw.lat)
			logf("check latency round %d/%d c=%d: imapgate p50 %.2f p99 %.2f ms (%d) | raw LOGIN p50 %.2f p99 %.2f ms (%d)",
				round, b.cfg.rounds, conc, ms(percentile(ig.lat, 50)), ms(percentile(ig.lat, 99)), len(ig.lat),
				ms(percentile(raw.lat, 50)), ms(percentile(raw.lat, 99)), len(raw.lat))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// endToEnd: IMAP logins through nginx asking imapgate (warm, cold) or the
// `return 204` nginx.
func (b *bench) endToEnd(ctx context.Context, r *report) error {
	// Warm imapgate's cache for every user.
	for _, a := range b.accounts {
		if err := authOK(ipWarm+":9180", authRequestBytes(ipWarm, a.User, a.Password)); err != nil {
			return fmt.Errorf("warming the cache: %w", err)
		}
	}
	conc := b.cfg.e2eConc
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, side := range []struct {
			name string
			mp   *harness.MailProxy
			into *[]float64
		}{
			{"imapgate warm", b.mailWarm, &r.e2eWarm},
			{"imapgate cold", b.mailCold, &r.e2eCold},
			{"nginx 204", b.mail204, &r.e2e204},
			{"PHP seed", b.mailPHP, &r.e2ePHP},
		} {
			l := closedLoop(conc, b.cfg.e2eDuration, 0, func(w, i int) error {
				a := b.userFor(w, conc, i)
				return imapLogin(side.mp.IMAPAddr, a.User, a.Password)
			})
			if l.fails > 0 {
				return fmt.Errorf("%s: %d of %d logins failed, first: %v", side.name, l.fails, l.fails+len(l.lat), l.firstEr)
			}
			*side.into = append(*side.into, l.rate())
			logf("end to end round %d/%d: %-13s %6.1f logins/s (p50 %.1f ms)", round, b.cfg.rounds, side.name, l.rate(), ms(percentile(l.lat, 50)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// steadyWorkload: every user logs in through nginx (imapgate with its
// default TTL) once, then steadyPass more times; Dovecot's log says how many
// logins the backend served for each pass.
func (b *bench) steadyWorkload(ctx context.Context, r *report) error {
	conc := b.cfg.steadyConc
	pass := func() (clients, backend int, err error) {
		offset := b.backend.LogOffset()
		l := closedLoop(conc, time.Minute, 0, func(w, i int) error {
			idx := w + conc*i
			if idx >= len(b.accounts) {
				return errStop
			}
			a := b.accounts[idx]
			return imapLogin(b.mailStdy.IMAPAddr, a.User, a.Password)
		})
		if l.fails > 0 {
			return 0, 0, fmt.Errorf("logins through nginx: %d failed, first: %v", l.fails, l.firstEr)
		}
		n, err := b.countLogins(ctx, offset)
		return len(l.lat), n, err
	}
	c, n, err := pass()
	if err != nil {
		return err
	}
	r.steadyFirstClients, r.steadyFirstBackend = c, n
	logf("steady workload, first logins: %d client logins, %d backend logins", c, n)
	for p := 1; p <= b.cfg.steadyPass; p++ {
		c, n, err := pass()
		if err != nil {
			return err
		}
		r.steadyClients += c
		r.steadyBackend += n
		logf("steady workload, pass %d/%d: %d client logins, %d backend logins", p, b.cfg.steadyPass, c, n)
	}
	return nil
}

// errStop ends a worker of closedLoop once its share of users is done.
var errStop = errors.New("stop")

// countLogins counts Dovecot's successful IMAP logins of the bench users
// since offset, once a barrier login made after them has been logged
// (Dovecot writes its log asynchronously).
func (b *bench) countLogins(ctx context.Context, offset int64) (int, error) {
	if err := imapLogin(b.backend.IMAPAddr(), b.barrier.User, b.barrier.Password); err != nil {
		return 0, fmt.Errorf("barrier login: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	barrier := "Login: user=<" + b.barrier.User + ">"
	if _, err := b.backend.WaitLog(wctx, offset, func(l string) bool { return strings.Contains(l, barrier) }); err != nil {
		return 0, err
	}
	time.Sleep(200 * time.Millisecond) // a late writer among the log's clients
	n := 0
	for _, l := range b.backend.LogSince(offset) {
		if strings.Contains(l, "imap-login: ") && strings.Contains(l, "Login: user=<bench") {
			n++
		}
	}
	return n, nil
}

// memory: a fresh imapgate per round, memConc concurrent requests each held
// at the slow backend until all are in flight; VmHWM at the end.
func (b *bench) memory(ctx context.Context, r *report) error {
	slow, err := newSlowIMAP(addrSlowIMP, 45*time.Second)
	if err != nil {
		return err
	}
	defer slow.Close()
	addr := ipMemory + ":9180"
	reqs := make([][]byte, b.cfg.memConc)
	for i := range reqs {
		// Each from a network of its own, as 1,000 mail clients logging in
		// at once would be: imapgate counts checks in flight against its
		// per-network limit (IMAPGATE_LIMIT_NETWORK, 100 by default).
		reqs[i] = authRequestFrom(ipMemory, fmt.Sprintf("mem%05d", i), fmt.Sprintf("pw-%08x", i*2654435761),
			fmt.Sprintf("10.%d.%d.7", i/256, i%256))
	}
	for round := 1; round <= b.cfg.memRounds; round++ {
		slow.Hold()
		settings := map[string]string{
			"IMAPGATE_BACKENDS":        "slow=imap://" + addrSlowIMP,
			"IMAPGATE_DEFAULT_BACKEND": "slow",
			"IMAPGATE_VERIFY_TIMEOUT":  "60s",
		}
		for k, v := range b.cfg.extraEnv {
			settings[k] = v
		}
		p, err := b.env.StartImapgate(ctx, fmt.Sprintf("imapgate-mem%d", round), addr, settings)
		if err != nil {
			return err
		}
		stop := func() {
			if err := p.Stop(15 * time.Second); err != nil {
				logf("stopping %s: %v", p.Name, err)
			}
		}
		idleRSS, _, err := procStatus(p.Pid())
		if err != nil {
			stop()
			return err
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var fails int
		var first error
		start := time.Now()
		for i := range reqs {
			wg.Go(func() {
				if err := authOK(addr, reqs[i]); err != nil {
					mu.Lock()
					fails++
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			})
		}
		// Every request is inside imapgate once it holds a connection for
		// each, and as many checks as its per-backend slots allow
		// (IMAPGATE_MAX_CHECKS) wait at the backend; the rest wait for a
		// slot in imapgate.
		wantHeld := int64(len(reqs))
		if n, err := strconv.Atoi(settings["IMAPGATE_MAX_CHECKS"]); err == nil && n > 0 {
			wantHeld = min(wantHeld, int64(n))
		} else if settings["IMAPGATE_MAX_CHECKS"] == "" {
			wantHeld = min(wantHeld, defaultMaxChecks)
		}
		deadline := time.Now().Add(30 * time.Second)
		for (slow.held.Load() < wantHeld || openFDs(p.Pid()) < len(reqs)) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		held := int(slow.held.Load())
		time.Sleep(b.cfg.memHold)
		inFlight, _ := metric(addr, "imapgate_checks_in_flight")
		rssHeld, _, err := procStatus(p.Pid())
		if err != nil {
			slow.Release()
			wg.Wait()
			stop()
			return err
		}
		slow.Release()
		wg.Wait()
		took := time.Since(start)
		_, hwm, err := procStatus(p.Pid())
		stop()
		if err != nil {
			return err
		}
		if fails > 0 {
			return fmt.Errorf("%d of %d requests failed, first: %v", fails, len(reqs), first)
		}
		r.memHWM = append(r.memHWM, float64(hwm)/1024)
		r.memHeldRSS = append(r.memHeldRSS, float64(rssHeld)/1024)
		r.memIdle = append(r.memIdle, float64(idleRSS)/1024)
		r.memHeld = append(r.memHeld, held)
		r.memInFlight = append(r.memInFlight, int(inFlight))
		logf("memory round %d/%d: %d held at the backend (%d checks in flight), RSS idle %.1f MiB, held %.1f MiB, peak (VmHWM) %.1f MiB, all answered in %v",
			round, b.cfg.memRounds, held, int(inFlight), float64(idleRSS)/1024, float64(rssHeld)/1024, float64(hwm)/1024, took.Round(time.Millisecond))
	}
	return nil
}

// defaultMaxChecks is IMAPGATE_MAX_CHECKS's default.
const defaultMaxChecks = 32

// openFDs counts the open files of process pid (its connections, mostly).
func openFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(entries)
}

func machine(env *harness.Env) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	ver := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput() // wrk -v exits 1
		if len(out) == 0 {
			return "?"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	rev := "?"
	if root, err := harness.ModuleRoot(); err == nil {
		rev = ver("git", "-C", root, "describe", "--always", "--dirty")
	}
	return fmt.Sprintf("%d cores (nproc), %s, Linux %s, %s, %s, dovecot %s, wrk %s, Dovecot in %s mode, imapgate %s",
		runtime.NumCPU(), model, kernel, runtime.Version(), ver("nginx", "-v"), ver("dovecot", "--version"),
		strings.Fields(ver("wrk", "-v") + " ? ?")[1], env.Mode, rev)
}
