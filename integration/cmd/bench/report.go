package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

type latencyFigures struct {
	igP50, igP99, rawP50, rawP99 []float64 // ms, one per round
	igN, rawN                    int       // samples, all rounds
}

// report collects every round's figures.
type report struct {
	machine string
	command string
	took    time.Duration
	notes   []string

	cachedIG, cachedNginx      []float64
	cachedNetHTTP              []float64
	cachedPHP, e2ePHP          []float64
	cachedHits, cachedRequests int

	latency map[int]*latencyFigures

	e2eWarm, e2eCold, e2e204 []float64

	steadyFirstClients, steadyFirstBackend int
	steadyClients, steadyBackend           int

	memHWM, memHeldRSS, memIdle []float64 // MiB
	memHeld, memInFlight        []int

	penalty []penaltyFigures

	guessing   *guessingFigures
	flood      *floodFigures
	shared     *sharedFigures
	resilience *resilienceFigures
	unix       *unixFigures
	growth     *growthFigures
	sql        *sqlFigures
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// thousands formats v with a thin separator every three digits.
func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func list(v []float64, format string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\n## imapgate benchmark (`make bench`)\n\n")
	fmt.Fprintf(w, "Machine: %s.  \n", r.machine)
	fmt.Fprintf(w, "Command: `%s`.  \n", r.command)
	if len(cfg.extraEnv) > 0 {
		var kv []string
		for k, v := range cfg.extraEnv {
			kv = append(kv, k+"="+v)
		}
		slices.Sort(kv)
		fmt.Fprintf(w, "imapgate's environment also had: %s.  \n", strings.Join(kv, " "))
	}
	fmt.Fprintf(w, "Each comparison ran both sides in this run, interleaved, %d round(s); the figures are medians of the rounds. Whole run: %v.\n\n",
		cfg.rounds, r.took.Round(time.Second))

	fmt.Fprintln(w, "| figure | imapgate | baseline | ratio | target | |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|---|")

	ig, ng := median(r.cachedIG), median(r.cachedNginx)
	cr := ratio(ig, ng)
	if cfg.want("cached") {
		fmt.Fprintf(w, "| cached answer, requests/s (new connection per request, HTTP/1.0 as nginx sends it, c=%d, wrk -t%d, %v runs) | %s | %s (nginx `return 204`) | %.3f× | ≥ 1.0× | %s |\n",
			cfg.wrkConns, cfg.wrkThreads, cfg.wrkDuration, thousands(ig), thousands(ng), cr, met(cr >= 1.0))
		php := median(r.cachedPHP)
		fmt.Fprintf(w, "| … the PHP seed it replaces (auth.php on php-fpm behind nginx, no password check) | %s | %s (imapgate's own server) | %.3f× | — | |\n",
			thousands(php), thousands(ig), ratio(php, ig))
		nh := median(r.cachedNetHTTP)
		fmt.Fprintf(w, "| … the same imapgate on net/http (`IMAPGATE_HTTP_SERVER=net/http`) | %s | %s (imapgate's own server) | %.3f× | — | |\n",
			thousands(nh), thousands(ig), ratio(nh, ig))
	}

	for _, conc := range []int{1, 8} {
		f := r.latency[conc]
		if f == nil {
			continue
		}
		for _, q := range []struct {
			name    string
			ig, raw []float64
		}{{"p50", f.igP50, f.rawP50}, {"p99", f.igP99, f.rawP99}} {
			a, b := median(q.ig), median(q.raw)
			lr := ratio(a, b)
			fmt.Fprintf(w, "| check latency %s, c=%d (imapgate cache off, direct HTTP) | %.2f ms | %.2f ms (raw IMAP LOGIN+LOGOUT, same Dovecot, same client) | %.3f× | ≤ 1.05× | %s |\n",
				q.name, conc, a, b, lr, met(lr <= 1.05))
		}
	}

	warm, cold, base := median(r.e2eWarm), median(r.e2eCold), median(r.e2e204)
	wr, cr2 := ratio(warm, base), ratio(cold, base)
	if cfg.want("e2e") {
		fmt.Fprintf(w, "| end to end, IMAP logins/s through nginx (LOGIN+LOGOUT, c=%d), imapgate cache warm | %.1f | %.1f (nginx mail + `return 204` auth) | %.3f× | ≥ 0.95× | %s |\n",
			cfg.e2eConc, warm, base, wr, met(wr >= 0.95))
		fmt.Fprintf(w, "| end to end, imapgate cache off (every login checked) | %.1f | %.1f | %.3f× | — | |\n", cold, base, cr2)
		php := median(r.e2ePHP)
		fmt.Fprintf(w, "| end to end, nginx asking the PHP seed (no password check) | %.1f | %.1f | %.3f× | — | |\n", php, base, ratio(php, base))
	}

	steady := ratio(float64(r.steadyBackend), float64(r.steadyClients))
	first := ratio(float64(r.steadyFirstBackend), float64(r.steadyFirstClients))
	all := ratio(float64(r.steadyBackend+r.steadyFirstBackend), float64(r.steadyClients+r.steadyFirstClients))
	if cfg.want("steady") {
		fmt.Fprintf(w, "| backend logins per client login, steady workload (%d users each logging in %d more times within the TTL; Dovecot's log) | %.3f (%d / %d) | 1 (nginx's own login) | | ≤ 1.05 | %s |\n",
			cfg.users, cfg.steadyPass, steady, r.steadyBackend, r.steadyClients, met(steady <= 1.05))
		fmt.Fprintf(w, "| … each user's first login (check + proxied login) | %.3f (%d / %d) | | | — | |\n",
			first, r.steadyFirstBackend, r.steadyFirstClients)
		fmt.Fprintf(w, "| … all %d logins per user together | %.3f | | | — | |\n", cfg.steadyPass+1, all)
	}

	peak := median(r.memHWM)
	if cfg.want("memory") {
		fmt.Fprintf(w, "| peak RSS (VmHWM), %s concurrent requests, each needing a check on one slow backend (fresh imapgate; checks in flight: %v, the rest wait for a slot) | %.1f MiB | | | ≤ 30 MiB | %s |\n",
			thousands(float64(cfg.memConc)), r.memInFlight, peak, met(peak <= 30))
	}

	for _, f := range r.penalty {
		ratio := float64(f.attackP99) / float64(f.idleP99)
		fmt.Fprintf(w, "| legitimate check p99 while one client guesses 20 passwords/s, Dovecot's auth penalty on, %s (%d guesses, %d reached Dovecot) | %.2f ms | %.2f ms (idle) | %.3f× | ≤ 1.5× | %s |\n",
			f.name, f.guessesN, f.reached, ms(f.attackP99), ms(f.idleP99), ratio, met(ratio <= 1.5))
	}
	r.printGuessing(w)
	r.printShared(w)

	if r.resilience != nil {
		r.resilience.print(w)
	}
	if r.unix != nil {
		r.unix.print(w, cfg.wrkConns)
	}
	r.printCosts(w, false)

	fmt.Fprintf(w, "\nRounds:\n\n")
	if cfg.want("cached") {
		fmt.Fprintf(w, "- cached answer, imapgate req/s: %s; nginx `return 204`: %s; imapgate on net/http: %s; PHP seed: %s; imapgate's cache hits %d of %d requests wrk counted\n",
			list(r.cachedIG, "%.0f"), list(r.cachedNginx, "%.0f"), list(r.cachedNetHTTP, "%.0f"), list(r.cachedPHP, "%.0f"), r.cachedHits, r.cachedRequests)
	}
	for _, conc := range []int{1, 8} {
		if f := r.latency[conc]; f != nil {
			fmt.Fprintf(w, "- check latency c=%d, ms: imapgate p50 %s / p99 %s (%d checks); raw p50 %s / p99 %s (%d logins)\n",
				conc, list(f.igP50, "%.2f"), list(f.igP99, "%.2f"), f.igN, list(f.rawP50, "%.2f"), list(f.rawP99, "%.2f"), f.rawN)
		}
	}
	if cfg.want("e2e") {
		fmt.Fprintf(w, "- end to end logins/s: warm %s; cold %s; nginx `return 204` %s; PHP seed %s\n",
			list(r.e2eWarm, "%.1f"), list(r.e2eCold, "%.1f"), list(r.e2e204, "%.1f"), list(r.e2ePHP, "%.1f"))
	}
	held := make([]string, len(r.memHeld))
	for i := range r.memHeld {
		held[i] = fmt.Sprintf("%d/%d", r.memHeld[i], r.memInFlight[i])
	}
	if cfg.want("memory") {
		fmt.Fprintf(w, "- memory, MiB: idle RSS %s; RSS with all held %s; VmHWM %s (max %.1f); held at backend / imapgate_checks_in_flight %s\n",
			list(r.memIdle, "%.1f"), list(r.memHeldRSS, "%.1f"), list(r.memHWM, "%.1f"), slices.Max(append([]float64{0}, r.memHWM...)), strings.Join(held, ", "))
	}
	if r.resilience != nil {
		r.resilience.printRounds(w)
	}
	if r.unix != nil {
		r.unix.printRounds(w)
	}
	r.printCosts(w, true)
	for _, n := range r.notes {
		fmt.Fprintf(w, "- note: %s\n", n)
	}
	fmt.Fprintln(w)
}

// printGuessing adds the rows of the guessing and flood figures.
func (r *report) printGuessing(w io.Writer) {
	if f := r.guessing; f != nil {
		fmt.Fprintf(w, "| 40 distinct wrong passwords, one account, one client, one after another, Dovecot's penalty on: all answered in | %.1f s | | | | |\n", f.seqTook.Seconds())
		fmt.Fprintf(w, "| … of them reached Dovecot | %d | | | ≤ 10 | %s |\n", f.seqReached, met(f.seqReached <= 10))
		ratio := float64(f.attackP99) / float64(f.idleP99)
		fmt.Fprintf(w, "| legitimate check p99 while 32 guessers (one account) and 64 (64 accounts) from one network, a guess every %v each (%d guesses) | %.2f ms | %.2f ms (idle) | %.3f× | ≤ 1.5× | %s |\n",
			f.guessEvery, f.crowdGuesses, ms(f.attackP99), ms(f.idleP99), ratio, met(ratio <= 1.5))
		fmt.Fprintf(w, "| … their guesses that reached Dovecot: the one account / all | %d / %d | | | ≤ 10 / ≤ 100 | %s |\n",
			f.crowdReachedOne, f.crowdReachedAll, met(f.crowdReachedOne <= 10 && f.crowdReachedAll <= 100))
	}
	if f := r.flood; f != nil {
		fmt.Fprintf(w, "| peak RSS through a flood of %s wrong logins for distinct users from 100,000 networks (%.0f/s) | %.1f MiB | %.1f MiB (idle) | | | |\n",
			thousands(float64(f.requests)), float64(f.requests)/f.took.Seconds(), float64(f.hwmKB)/1024, float64(f.idleKB)/1024)
		fmt.Fprintf(w, "| … RSS once the flood is over | %.1f MiB | | | | |\n", float64(f.afterKB)/1024)
	}
}

// printShared adds the rows of the shared-state figures.
func (r *report) printShared(w io.Writer) {
	f := r.shared
	if f == nil {
		return
	}
	cs, cl := median(f.cachedShared), median(f.cachedLocal)
	fmt.Fprintf(w, "| cached answer, requests/s, state shared through Redis (c=32) | %s | %s (in-process state) | %.2f× | ≥ 0.9× | %s |\n",
		thousands(cs), thousands(cl), ratio(cs, cl), met(ratio(cs, cl) >= 0.9))
	fmt.Fprintf(w, "| check latency p50 / p99, c=1, state shared through Redis | %.2f / %.2f ms | %.2f / %.2f ms (in-process) | %.2f× / %.2f× | | |\n",
		median(f.p50Shared), median(f.p99Shared), median(f.p50Local), median(f.p99Local),
		ratio(median(f.p50Shared), median(f.p50Local)), ratio(median(f.p99Shared), median(f.p99Local)))
	fmt.Fprintf(w, "| store memory per 100,000 users with a wrong password from a network of its own (pair, user and network counts) | %.1f MiB | %.0f bytes a user | | | |\n",
		f.bytesPerUser*100_000/(1<<20), f.bytesPerUser)
	fmt.Fprintf(w, "| … per 100,000 owner marks (user logged in from a network) | %.1f MiB | %.0f bytes a mark | | | |\n",
		f.bytesPerOwner*100_000/(1<<20), f.bytesPerOwner)
}
