package main

// The growth figure (-only growth): how imapgate's cost grows with the
// user base (issue 14, item 4). On the real binary: its RSS and the load
// and reload time of a users file of 10k, 100k and 1M lines, and the p99
// of cached answers while the 1M-line file is reloaded. In this process
// (growthmem.go): bytes per verified-login cache entry and per limiter
// record, and cached requests/s with 1M cached users against 1k.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the growth figure (127.0.81.0/24 is its).
const (
	ipGrowth       = "127.0.81.1" // the imapgate binary with a users file
	ipGrowthInProc = "127.0.81.2" // the bench's own auth_http server (in-process handler)
)

// growthSizes are the user-base sizes measured.
var growthSizes = []int{10_000, 100_000, 1_000_000}

// usersFileSettle is the users file's settle time (backend.DefaultSettle):
// a reload waits this long before it reads.
const usersFileSettle = time.Second

// growthFigures is what the growth figure measured; maps are keyed by
// size, 0 being the baseline (a users file of the bench's accounts only).
type growthFigures struct {
	loadMS    map[int][]float64 // exec to "users file loaded", ms, one per round
	rssMiB    map[int][]float64 // VmRSS once loaded and idle
	reloadMS  map[int][]float64 // SIGHUP's read and parse: "rereading" to "loaded", less the settle
	reloadHWM map[int][]float64 // VmHWM after the reload, MiB
	reloadRSS map[int][]float64 // VmRSS after the reload, MiB

	p99Idle, p99Reload []float64 // ms, cached answers, one per round
	maxIdle, maxReload []float64 // ms, the slowest answer of each window
	nIdle, nReload     int       // answers, all rounds
	baseLines          int       // lines of the baseline's users file

	mem *entryFigures // growthmem.go
}

// growth runs the growth figure.
func (b *bench) growth(ctx context.Context, r *report) error {
	f := &growthFigures{loadMS: map[int][]float64{}, rssMiB: map[int][]float64{}, reloadMS: map[int][]float64{},
		reloadHWM: map[int][]float64{}, reloadRSS: map[int][]float64{}}
	r.growth = f
	dir := filepath.Join(b.env.Dir, "growth")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f.baseLines = len(b.accounts) + 1
	files := map[int]string{}
	for _, n := range append([]int{0}, growthSizes...) {
		path := filepath.Join(dir, fmt.Sprintf("users-%d", n))
		if err := b.writeUsersFile(path, n); err != nil {
			return err
		}
		files[n] = path
	}
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, n := range append([]int{0}, growthSizes...) {
			if err := b.usersFileRound(ctx, f, n, files[n], round); err != nil {
				return fmt.Errorf("users file of %d lines: %w", n, err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	mem, err := b.entryFigure(ctx)
	if err != nil {
		return err
	}
	f.mem = mem
	return nil
}

// writeUsersFile writes a users file of the bench's accounts (routed to
// the bench Dovecot) and filler users up to n lines, every other one
// naming its backend and the rest taking IMAPGATE_USERS_FILE_BACKEND, as
// the format allows.
func (b *bench) writeUsersFile(path string, n int) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 1<<16)
	fmt.Fprintln(w, "# users file of the growth bench")
	for _, a := range b.accounts {
		fmt.Fprintf(w, "%s bench\n", a.User)
	}
	for i := len(b.accounts); i < n; i++ {
		if i%2 == 0 {
			fmt.Fprintf(w, "filler%07d@example.org bench\n", i)
		} else {
			fmt.Fprintf(w, "filler%07d@example.org\n", i)
		}
	}
	if err := w.Flush(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// usersFileRound starts imapgate with the users file of n lines, reads
// when the load was logged and the RSS, reloads it once by SIGHUP and
// times that from its log; for the largest file it also measures the
// cached answers' p99 while it is reloaded.
func (b *bench) usersFileRound(ctx context.Context, f *growthFigures, n int, path string, round int) error {
	started := time.Now()
	p, err := b.env.StartImapgate(ctx, fmt.Sprintf("imapgate-growth-%d-%d", n, round), ipGrowth+":9180", map[string]string{
		"IMAPGATE_BACKENDS":           "bench=" + ipBackend,
		"IMAPGATE_USERS_FILE":         path,
		"IMAPGATE_USERS_FILE_BACKEND": "bench",
		"IMAPGATE_CACHE_TTL":          "24h",
		"IMAPGATE_LOG_FORMAT":         "json",
	})
	if err != nil {
		return err
	}
	defer p.Stop(15 * time.Second)
	loaded, err := waitLog(ctx, p.LogPath, "users file loaded", 1)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // the collector's work after the load
	rss, _, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	f.loadMS[n] = append(f.loadMS[n], ms(loaded.Sub(started)))
	f.rssMiB[n] = append(f.rssMiB[n], float64(rss)/1024)
	took, err := reloadOnce(ctx, p)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	rssAfter, hwm, err := procStatus(p.Pid())
	if err != nil {
		return err
	}
	f.reloadMS[n] = append(f.reloadMS[n], ms(took))
	f.reloadHWM[n] = append(f.reloadHWM[n], float64(hwm)/1024)
	f.reloadRSS[n] = append(f.reloadRSS[n], float64(rssAfter)/1024)
	logf("growth round %d/%d, users file of %d lines: loaded %.1f ms after exec, RSS %.1f MiB; reload %.1f ms, then RSS %.1f MiB, VmHWM %.1f MiB",
		round, b.cfg.rounds, n, ms(loaded.Sub(started)), float64(rss)/1024, ms(took), float64(rssAfter)/1024, float64(hwm)/1024)
	if n == growthSizes[len(growthSizes)-1] {
		return b.reloadP99(ctx, f, p)
	}
	return nil
}

// reloadOnce sends SIGHUP and returns how long the reread took by the
// log: from "rereading the users file" to the next "users file loaded",
// less the settle time the guard waits first.
func reloadOnce(ctx context.Context, p *harness.Process) (time.Duration, error) {
	before := countLog(p.LogPath, "users file loaded")
	asked := countLog(p.LogPath, "rereading the users file")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		return 0, err
	}
	from, err := waitLog(ctx, p.LogPath, "rereading the users file", asked+1)
	if err != nil {
		return 0, err
	}
	to, err := waitLog(ctx, p.LogPath, "users file loaded", before+1)
	if err != nil {
		return 0, err
	}
	return to.Sub(from) - usersFileSettle, nil
}

// reloadP99 measures cached answers (c=4, the bench's accounts, each
// routed by the users file) in a window while the file is reloaded and in
// an idle window as long, in that order.
func (b *bench) reloadP99(ctx context.Context, f *growthFigures, p *harness.Process) error {
	addr := ipGrowth + ":9180"
	reqs := make([][]byte, len(b.accounts))
	for i, a := range b.accounts {
		reqs[i] = authRequestBytes(ipGrowth, a.User, a.Password)
		if err := authOK(addr, reqs[i]); err != nil { // the check; cached from here on
			return fmt.Errorf("warming %s: %w", a.User, err)
		}
	}
	const conc = 4
	op := func(w, i int) error { return authOK(addr, reqs[(w+conc*i)%len(reqs)]) }

	before := countLog(p.LogPath, "users file loaded")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	// The read starts a settle after the signal: the window opens just
	// before it and closes a little after the new table is in.
	time.Sleep(usersFileSettle - 100*time.Millisecond)
	var done atomic.Bool
	go func() {
		waitLog(ctx, p.LogPath, "users file loaded", before+1)
		time.Sleep(300 * time.Millisecond)
		done.Store(true)
	}()
	reload := closedLoop(conc, time.Minute, 0, func(w, i int) error {
		if done.Load() {
			return errStop
		}
		return op(w, i)
	})
	idle := closedLoop(conc, reload.elapsed, 0, op)
	for _, l := range []load{reload, idle} {
		if l.fails > 0 || len(l.lat) == 0 {
			return fmt.Errorf("cached answers: %d failed of %d, first: %v", l.fails, l.fails+len(l.lat), l.firstEr)
		}
	}
	f.p99Reload = append(f.p99Reload, ms(percentile(reload.lat, 99)))
	f.p99Idle = append(f.p99Idle, ms(percentile(idle.lat, 99)))
	f.maxReload = append(f.maxReload, ms(percentile(reload.lat, 100)))
	f.maxIdle = append(f.maxIdle, ms(percentile(idle.lat, 100)))
	f.nReload += len(reload.lat)
	f.nIdle += len(idle.lat)
	logf("growth: cached answers p99 %.2f ms (max %.2f, %d in %v) while the file was reloaded, %.2f ms (max %.2f, %d) without",
		ms(percentile(reload.lat, 99)), ms(percentile(reload.lat, 100)), len(reload.lat), reload.elapsed.Round(time.Millisecond),
		ms(percentile(idle.lat, 99)), ms(percentile(idle.lat, 100)), len(idle.lat))
	return nil
}

// logRecord is the part of a line of imapgate's JSON log the bench reads.
type logRecord struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
}

// scanLog calls fn with each record of the JSON log at path whose msg is
// msg, until fn returns false.
func scanLog(path, msg string, fn func(logRecord) bool) {
	file, err := os.Open(path)
	if err != nil {
		return
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), `"msg":"`+msg+`"`) {
			continue
		}
		var rec logRecord
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg && !fn(rec) {
			return
		}
	}
}

// countLog counts the records of the log at path whose msg is msg.
func countLog(path, msg string) int {
	n := 0
	scanLog(path, msg, func(logRecord) bool { n++; return true })
	return n
}

// waitLog waits (up to a minute) until the log at path has nth records
// whose msg is msg, and returns the time of the nth.
func waitLog(ctx context.Context, path, msg string, nth int) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var at time.Time
		n := 0
		scanLog(path, msg, func(rec logRecord) bool {
			n++
			at = rec.Time
			return n < nth
		})
		if n >= nth {
			return at, nil
		}
		select {
		case <-ctx.Done():
			out, _ := os.ReadFile(path)
			return time.Time{}, fmt.Errorf("no %q (#%d) in the log: %w\n%s", msg, nth, ctx.Err(), tailString(string(out), 2000))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// print writes the growth figure's rows.
func (f *growthFigures) print(w io.Writer) {
	base := func(m map[int][]float64) float64 { return median(m[0]) }
	for _, n := range growthSizes {
		fmt.Fprintf(w, "| users file of %s lines: loaded, ms after exec (the imapgate binary's log) | %.1f ms | %.1f ms (%d lines) | %.1f× | | |\n",
			thousands(float64(n)), median(f.loadMS[n]), base(f.loadMS), f.baseLines, ratio(median(f.loadMS[n]), base(f.loadMS)))
	}
	for _, n := range growthSizes {
		fmt.Fprintf(w, "| … %s lines: RSS once loaded | %.1f MiB | %.1f MiB | +%.1f MiB (%.0f bytes a line) | | |\n",
			thousands(float64(n)), median(f.rssMiB[n]), base(f.rssMiB), median(f.rssMiB[n])-base(f.rssMiB),
			(median(f.rssMiB[n])-base(f.rssMiB))*(1<<20)/float64(n))
	}
	for _, n := range growthSizes {
		fmt.Fprintf(w, "| … %s lines: reload on SIGHUP, read and parse (log, less the 1 s settle) | %.1f ms | %.1f ms | %.1f× | | |\n",
			thousands(float64(n)), median(f.reloadMS[n]), base(f.reloadMS), ratio(median(f.reloadMS[n]), base(f.reloadMS)))
	}
	for _, n := range growthSizes {
		fmt.Fprintf(w, "| … %s lines: VmHWM after start and one reload / RSS after it | %.1f / %.1f MiB | %.1f / %.1f MiB | | | |\n",
			thousands(float64(n)), median(f.reloadHWM[n]), median(f.reloadRSS[n]), base(f.reloadHWM), base(f.reloadRSS))
	}
	if len(f.p99Reload) > 0 {
		rr := ratio(median(f.p99Reload), median(f.p99Idle))
		fmt.Fprintf(w, "| cached answer p99 (c=4, users routed by the file) while the %s-line file is reloaded (window: the read, parse and swap) | %.2f ms (max %.1f) | %.2f ms (max %.1f), no reload | %.2f× | | |\n",
			thousands(float64(growthSizes[len(growthSizes)-1])), median(f.p99Reload), median(f.maxReload), median(f.p99Idle), median(f.maxIdle), rr)
	}
	if f.mem != nil {
		f.mem.print(w)
	}
}

// printRounds writes the growth figure's rounds.
func (f *growthFigures) printRounds(w io.Writer) {
	for _, n := range append([]int{0}, growthSizes...) {
		fmt.Fprintf(w, "- growth, users file of %d lines: loaded (ms after exec) %s; RSS MiB %s; reload ms %s; VmHWM MiB %s\n",
			max(n, f.baseLines), list(f.loadMS[n], "%.1f"), list(f.rssMiB[n], "%.1f"), list(f.reloadMS[n], "%.1f"), list(f.reloadHWM[n], "%.1f"))
	}
	if len(f.p99Reload) > 0 {
		fmt.Fprintf(w, "- growth, cached p99 ms while reloading %s (%d answers), idle %s (%d answers)\n",
			list(f.p99Reload, "%.2f"), f.nReload, list(f.p99Idle, "%.2f"), f.nIdle)
	}
	if f.mem != nil {
		f.mem.printRounds(w)
	}
}

// printCosts writes the rows of the growth and SQL figures, or with
// rounds their details.
func (r *report) printCosts(w io.Writer, rounds bool) {
	if r.growth != nil {
		if rounds {
			r.growth.printRounds(w)
		} else {
			r.growth.print(w)
		}
	}
	if r.sql != nil {
		if rounds {
			r.sql.printRounds(w)
		} else {
			r.sql.print(w)
		}
	}
}
