package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

// opTimeout bounds one request or one login of the load generators.
const opTimeout = 15 * time.Second

// authRequestBytes is the request nginx's mail module sends to auth_http
// for an IMAP LOGIN (ngx_mail_auth_http_module.c): HTTP/1.0, a new
// connection, no keep-alive, user and password %-escaped. The client is
// 127.0.0.1.
func authRequestBytes(host, user, pass string) []byte {
	return authRequestFrom(host, user, pass, "127.0.0.1")
}

// authRequestFrom is authRequestBytes for a mail client at clientIP.
func authRequestFrom(host, user, pass, clientIP string) []byte {
	return []byte("GET /mail/auth.php HTTP/1.0\r\n" +
		"Host: " + host + "\r\n" +
		"Auth-Method: plain\r\n" +
		"Auth-User: " + harness.NginxEscape(user) + "\r\n" +
		"Auth-Pass: " + harness.NginxEscape(pass) + "\r\n" +
		"Auth-Protocol: imap\r\n" +
		"Auth-Login-Attempt: 1\r\n" +
		"Client-IP: " + clientIP + "\r\n" +
		"Client-Host: [UNAVAILABLE]\r\n" +
		"\r\n")
}

// authOnce sends one prepared auth_http request to addr on a new connection,
// reads the whole answer (the server closes), and returns its Auth-Status.
func authOnce(addr string, req []byte) (string, error) {
	return authOnceWithin(addr, req, opTimeout)
}

// authOnceWithin is authOnce with a bound of its own, for answers that
// Dovecot's penalty holds (up to 15 s, and imapgate waits for it).
func authOnceWithin(addr string, req []byte, timeout time.Duration) (string, error) {
	return authOnceOver("tcp", addr, req, timeout)
}

// authOnceOver is authOnceWithin over network ("tcp" or "unix").
func authOnceOver(network, addr string, req []byte, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(req); err != nil {
		return "", err
	}
	var buf [2048]byte
	n := 0
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if err == io.EOF || n == len(buf) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	resp := string(buf[:n])
	if !strings.HasPrefix(resp, "HTTP/1.") {
		return "", fmt.Errorf("not an HTTP response: %q", truncate(resp))
	}
	for line := range strings.SplitSeq(resp, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Auth-Status") {
			return strings.TrimSpace(value), nil
		}
		if line == "" {
			break
		}
	}
	return "", fmt.Errorf("no Auth-Status in %q", truncate(resp))
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// authOK is authOnce that wants Auth-Status: OK.
func authOK(addr string, req []byte) error {
	status, err := authOnce(addr, req)
	if err != nil {
		return err
	}
	if status != "OK" {
		return fmt.Errorf("Auth-Status %q", status)
	}
	return nil
}

// measureOK sends req to addr over and over for d, each answered OK, and
// returns the latencies.
func measureOK(addr string, req []byte, d time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		start := time.Now()
		if err := authOK(addr, req); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// imapLogin is a minimal IMAP client: greeting, LOGIN, LOGOUT, each reply
// awaited, on a new connection to addr (a Dovecot, or nginx's mail proxy).
// The same code measures the raw login and drives the end-to-end logins.
func imapLogin(addr, user, pass string) error {
	conn, err := net.DialTimeout("tcp", addr, opTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(opTimeout))
	r := bufio.NewReaderSize(conn, 4096)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(greeting))
	}
	if _, err := io.WriteString(conn, "a LOGIN "+quote(user)+" "+quote(pass)+"\r\n"); err != nil {
		return err
	}
	if err := tagged(r, "a "); err != nil {
		return fmt.Errorf("LOGIN: %w", err)
	}
	if _, err := io.WriteString(conn, "b LOGOUT\r\n"); err != nil {
		return err
	}
	if err := tagged(r, "b "); err != nil {
		return fmt.Errorf("LOGOUT: %w", err)
	}
	return nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// tagged reads until the reply tagged tag and wants it to be OK.
func tagged(r *bufio.Reader, tag string) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, tag) {
			if strings.HasPrefix(line[len(tag):], "OK") {
				return nil
			}
			return fmt.Errorf("%q", strings.TrimSpace(line))
		}
	}
}

// load is what one closed-loop run measured.
type load struct {
	lat     []time.Duration // of the successful operations
	fails   int
	firstEr error
	elapsed time.Duration
}

func (l load) rate() float64 { return float64(len(l.lat)) / l.elapsed.Seconds() }

// closedLoop runs op on conc workers back to back until dur has passed or
// each worker has done maxPer operations (0: no count bound). A worker
// whose op returns errStop stops there.
func closedLoop(conc int, dur time.Duration, maxPer int, op func(worker, i int) error) load {
	var (
		mu  sync.Mutex
		res load
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for w := range conc {
		wg.Go(func() {
			var lat []time.Duration
			fails := 0
			var first error
			for i := 0; (maxPer == 0 || i < maxPer) && time.Now().Before(deadline); i++ {
				t := time.Now()
				if err := op(w, i); err != nil {
					if err == errStop {
						break
					}
					fails++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.fails += fails
			if res.firstEr == nil {
				res.firstEr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// percentile returns the p-th percentile (nearest rank) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// wrkResult is what one wrk run printed.
type wrkResult struct {
	rps      float64
	requests int
	errors   string // socket errors and non-2xx, "" when none
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reRequests = regexp.MustCompile(`(\d+) requests in`)
	reSocket   = regexp.MustCompile(`Socket errors: (.*)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// wrkScript writes a wrk Lua script that sends req (the raw request,
// HTTP/1.0 as nginx sends it) on every connection. Overriding wrk.format
// keeps the request static, so wrk does not call Lua per request.
func wrkScript(dir, name string, req []byte) (string, error) {
	path := filepath.Join(dir, name+".lua")
	script := fmt.Sprintf("-- written by integration/cmd/bench\nlocal req = %q\nwrk.format = function() return req end\n", req)
	// %q is Go syntax; Lua understands the escapes Go uses here (\r, \n, \", \\)
	// for the ASCII requests the bench sends.
	return path, os.WriteFile(path, []byte(script), 0o644)
}

// roundOrder is the order in which round (from 1) runs n sides: each
// round starts one side later than the one before, so that no side
// always follows the same one: in a fixed order imapgate's runs always
// came right after the PHP seed's, the heaviest of the four (php-fpm's
// workers, some 30,000 failed requests a run), and whatever that leaves
// behind fell on imapgate alone.
func roundOrder(n, round int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = (i + round - 1) % n
	}
	return order
}

// runWrk runs wrk against url with script for dur at conns connections.
func runWrk(ctx context.Context, script, url string, threads, conns int, dur time.Duration) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(int(dur.Seconds()))+"s", "--timeout", "5s", "-s", script, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	m := reRPS.FindStringSubmatch(s)
	if m == nil {
		return wrkResult{}, fmt.Errorf("wrk printed no Requests/sec:\n%s", s)
	}
	var res wrkResult
	res.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reRequests.FindStringSubmatch(s); m != nil {
		res.requests, _ = strconv.Atoi(m[1])
	}
	var errs []string
	if m := reSocket.FindStringSubmatch(s); m != nil {
		errs = append(errs, "socket errors: "+m[1])
	}
	if m := reNon2xx.FindStringSubmatch(s); m != nil {
		errs = append(errs, m[1]+" non-2xx")
	}
	res.errors = strings.Join(errs, "; ")
	return res, nil
}

// metric returns the value of the Prometheus series line that starts with
// series (name and labels exactly as imapgate prints them).
func metric(addr, series string) (float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no series %s at http://%s/metrics", series, addr)
}

// procStatus returns the kB values of VmRSS and VmHWM of process pid.
func procStatus(pid int) (rss, hwm int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(value)
		if len(f) == 0 {
			continue
		}
		switch name {
		case "VmRSS":
			rss, _ = strconv.Atoi(f[0])
		case "VmHWM":
			hwm, _ = strconv.Atoi(f[0])
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("no VmRSS/VmHWM in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, nil
}
