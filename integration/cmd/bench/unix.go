package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// unixFigures compare imapgate's cached answer over TCP and over a unix
// socket (IMAPGATE_LISTEN=unix:/path, nginx's auth_http unix:/path:/uri),
// with one Go client for both: wrk cannot dial a unix socket.
type unixFigures struct {
	tcpRate, unixRate []float64 // requests/s at c=32, one per round
	tcpP50, unixP50   []float64 // ms at c=1
	// nginx's `return 204` on the same transports, with the same client.
	nginxTCPRate, nginxUnixRate []float64
}

// unixSocket measures the cached answer of an imapgate listening on a
// unix socket against the warm imapgate on TCP, interleaved.
func (b *bench) unixSocket(ctx context.Context, r *report) error {
	sock := filepath.Join(b.env.Dir, "imapgate-unix", "auth.sock")
	p, err := b.env.StartImapgate(ctx, "imapgate-unix", "unix:"+sock, map[string]string{
		"IMAPGATE_BACKENDS":        "bench=" + ipBackend,
		"IMAPGATE_DEFAULT_BACKEND": "bench",
		"IMAPGATE_CACHE_TTL":       "24h",
	})
	if err != nil {
		return err
	}
	b.addStop(p)
	nginxSock := filepath.Join(b.env.Dir, "nginx-204-unix.sock")
	n, err := b.env.StartNginx204(ctx, "nginx-204-unix", "unix:"+nginxSock, "auto", ipBackend, 143)
	if err != nil {
		return err
	}
	b.addStop(n)
	a := b.accounts[0]
	tcpAddr := ipWarm + ":9180"
	tcpReq, unixReq := authRequestBytes(ipWarm, a.User, a.Password), authRequestBytes("localhost", a.User, a.Password)
	ask := func(network, addr string, req []byte) func(int, int) error {
		return func(int, int) error {
			status, err := authOnceOver(network, addr, req, opTimeout)
			if err == nil && status != "OK" {
				err = fmt.Errorf("Auth-Status %q", status)
			}
			return err
		}
	}
	// Warm: the first answer over each is a check.
	if err := ask("unix", sock, unixReq)(0, 0); err != nil {
		return fmt.Errorf("over the unix socket: %w", err)
	}
	f := &unixFigures{}
	r.unix = f
	for round := 1; round <= b.cfg.rounds; round++ {
		sides := []struct {
			network, addr string
			req           []byte
			rate, p50     *[]float64
		}{
			{"tcp", tcpAddr, tcpReq, &f.tcpRate, &f.tcpP50},
			{"tcp", ip204 + ":9180", tcpReq, &f.nginxTCPRate, nil},
			{"unix", sock, unixReq, &f.unixRate, &f.unixP50},
			{"unix", nginxSock, unixReq, &f.nginxUnixRate, nil},
		}
		for _, i := range roundOrder(len(sides), round) {
			side := sides[i]
			l := closedLoop(b.cfg.wrkConns, b.cfg.wrkDuration, 0, ask(side.network, side.addr, side.req))
			if l.fails > 0 {
				return fmt.Errorf("%s: %d failed, first: %v", side.network, l.fails, l.firstEr)
			}
			*side.rate = append(*side.rate, l.rate())
			if side.p50 != nil {
				one := closedLoop(1, 2*time.Second, 0, ask(side.network, side.addr, side.req))
				*side.p50 = append(*side.p50, ms(percentile(one.lat, 50)))
			}
		}
		logf("unix socket round %d/%d: c=%d imapgate %.0f req/s over TCP, %.0f over the unix socket; nginx 204 %.0f / %.0f", round, b.cfg.rounds,
			b.cfg.wrkConns, f.tcpRate[len(f.tcpRate)-1], f.unixRate[len(f.unixRate)-1], f.nginxTCPRate[len(f.nginxTCPRate)-1], f.nginxUnixRate[len(f.nginxUnixRate)-1])
	}
	return nil
}

// print adds the unix socket's rows.
func (f *unixFigures) print(w io.Writer, conns int) {
	t, u := median(f.tcpRate), median(f.unixRate)
	nt, nu := median(f.nginxTCPRate), median(f.nginxUnixRate)
	fmt.Fprintf(w, "| cached answer, requests/s, Go client, new connection per request, c=%d, over TCP | %s | %s (nginx `return 204`, same client) | %.3f× | ≥ 1.0× | %s |\n",
		conns, thousands(t), thousands(nt), ratio(t, nt), met(ratio(t, nt) >= 1.0))
	fmt.Fprintf(w, "| … over a unix socket (`auth_http unix:/path:/uri`) | %s | %s (nginx `return 204` on a unix socket) | %.3f× | ≥ 1.0× | %s |\n",
		thousands(u), thousands(nu), ratio(u, nu), met(ratio(u, nu) >= 1.0))
	fmt.Fprintf(w, "| cached answer over a unix socket (`auth_http unix:/path:/uri`), requests/s, Go client, new connection per request, c=%d | %s | %s (the same over TCP, same client) | %.3f× | — | |\n",
		conns, thousands(u), thousands(t), ratio(u, t))
	tp, up := median(f.tcpP50), median(f.unixP50)
	fmt.Fprintf(w, "| … answer latency p50, c=1 | %.3f ms | %.3f ms (TCP) | %.3f× | — | |\n", up, tp, ratio(up, tp))
}

// printRounds adds the unix socket's rounds.
func (f *unixFigures) printRounds(w io.Writer) {
	fmt.Fprintf(w, "- Go client, req/s: imapgate TCP %s, unix %s; nginx `return 204` TCP %s, unix %s; imapgate p50 ms at c=1: TCP %s, unix %s\n",
		list(f.tcpRate, "%.0f"), list(f.unixRate, "%.0f"), list(f.nginxTCPRate, "%.0f"), list(f.nginxUnixRate, "%.0f"),
		list(f.tcpP50, "%.3f"), list(f.unixP50, "%.3f"))
}
