package main

// The SQL figure (-only sql, issue 16's done-when): IMAP logins/s through
// nginx's mail proxy with 100,000 users in MariaDB (the Perl seed's
// mailaccounts table), imapgate routing by IMAPGATE_SQL_URL and
// IMAPGATE_SQL_QUERY to two real Dovecots that hold those users; the
// baseline is the same users routed by their first letter.

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
	"github.com/imapgate/imapgate/integration/harness"
)

// Addresses of the SQL figure (127.0.82.0/24 is its; MariaDB is the
// harness's, harness.IPMariaDB).
const (
	ipSQLHost1 = "127.0.82.1"  // Dovecot mailhost01: the users a… to m…
	ipSQLHost2 = "127.0.82.2"  // Dovecot mailhost02: n… to z…
	ipSQLWarm  = "127.0.82.11" // imapgate routing by SQL, cache warm, + its nginx
	ipSQLCold  = "127.0.82.12" // by SQL, cache off
	ipFLWarm   = "127.0.82.13" // by first letter, cache warm
	ipFLCold   = "127.0.82.14" // by first letter, cache off
)

const (
	sqlUsers     = 100_000
	sqlWarmUsers = 2_000 // the users whose logins the warm imapgates have verified
	// sqlQuery is the Perl seed's query, without the password column.
	sqlQuery       = "select mail_server from mailaccounts where username=? limit 1"
	sqlFirstLetter = "abcdefghijklm=mailhost01;nopqrstuvwxyz=mailhost02"
)

// sqlFigures is what the SQL figure measured, logins/s one per round.
type sqlFigures struct {
	sqlWarm, sqlCold, flWarm, flCold []float64
	conc                             int
}

// sqlAccount is the i-th user of the figure: its first letter says its
// host, as its row in mailaccounts does.
func sqlAccount(i int) dovecot.Account {
	return dovecot.Account{
		User:     fmt.Sprintf("%c%06d", 'a'+i%26, i),
		Password: fmt.Sprintf("pw-%08x", uint32(i)*2654435761^0x5bd1e995),
	}
}

// sqlHost is the backend of the user whose name begins with c.
func sqlHost(c byte) string {
	if c <= 'm' {
		return "mailhost01"
	}
	return "mailhost02"
}

// sqlLogins runs the SQL figure.
func (b *bench) sqlLogins(ctx context.Context, r *report) error {
	if err := b.startSQLBackends(ctx); err != nil {
		return err
	}
	db, err := b.env.StartMariaDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	began := time.Now()
	if err := seedMailaccounts(ctx, db); err != nil {
		return err
	}
	logf("sql: %d users in mailaccounts in %v", sqlUsers, time.Since(began).Round(time.Millisecond))
	proxies, err := b.startSQLGates(ctx)
	if err != nil {
		return err
	}
	f := &sqlFigures{conc: b.cfg.e2eConc}
	r.sql = f
	return b.sqlRounds(ctx, f, proxies)
}

// startSQLBackends starts the two Dovecots, each with the passwd-file of
// its half of the users.
func (b *bench) startSQLBackends(ctx context.Context) error {
	var hosts [2][]dovecot.Account
	for i := range sqlUsers {
		a := sqlAccount(i)
		h := 0
		if sqlHost(a.User[0]) == "mailhost02" {
			h = 1
		}
		hosts[h] = append(hosts[h], a)
	}
	for h, ip := range []string{ipSQLHost1, ipSQLHost2} {
		be, err := b.env.StartAccountsBackend(ctx, fmt.Sprintf("sqlhost0%d", h+1), ip, hosts[h])
		if err != nil {
			return err
		}
		b.stops = append(b.stops, func() { be.Close() })
		logf("sql: dovecot mailhost0%d on %s with %d accounts", h+1, ip, len(hosts[h]))
	}
	return nil
}

// seedMailaccounts adds the figure's users to the harness's mailaccounts
// table, as root over the server's socket (imapgate's account may only
// read it), in batches.
func seedMailaccounts(ctx context.Context, db *harness.Server) error {
	const batch = 5000
	var sql strings.Builder
	fmt.Fprintf(&sql, "USE %s;\n", harness.DirectoryDB)
	for i := range sqlUsers {
		if i%batch == 0 {
			sql.WriteString("INSERT INTO mailaccounts (username, password, mail_server) VALUES\n")
		}
		a := sqlAccount(i)
		fmt.Fprintf(&sql, "('%s', '*', '%s')", a.User, sqlHost(a.User[0]))
		if i%batch == batch-1 || i == sqlUsers-1 {
			sql.WriteString(";\n")
		} else {
			sql.WriteString(",\n")
		}
	}
	fmt.Fprintf(&sql, "SELECT COUNT(*) FROM mailaccounts;\n")
	cmd := exec.CommandContext(ctx, "mariadb", "--no-defaults", "-S", filepath.Join(db.Dir, "mysqld.sock"), "-u", "root", "-N")
	cmd.Stdin = strings.NewReader(sql.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("seeding mailaccounts: %v\n%s", err, tailString(string(out), 2000))
	}
	logf("sql: mailaccounts holds %s rows", strings.TrimSpace(string(out)))
	return nil
}

// startSQLGates starts the four imapgates and their nginx mail proxies,
// and warms the warm ones' caches with sqlWarmUsers users.
func (b *bench) startSQLGates(ctx context.Context) (map[string]*harness.MailProxy, error) {
	proxies := map[string]*harness.MailProxy{}
	for _, g := range []struct {
		ip, ttl string
		sql     bool
	}{{ipSQLWarm, "24h", true}, {ipSQLCold, "0", true}, {ipFLWarm, "24h", false}, {ipFLCold, "0", false}} {
		settings := map[string]string{
			"IMAPGATE_BACKENDS":  "mailhost01=" + ipSQLHost1 + ";mailhost02=" + ipSQLHost2,
			"IMAPGATE_CACHE_TTL": g.ttl,
		}
		if g.sql {
			settings["IMAPGATE_SQL_URL"] = harness.MariaDBURL()
			settings["IMAPGATE_SQL_QUERY"] = sqlQuery
			// MariaDB is asked at every login, the warm one's too: the
			// figure is what the lookup costs, not the route cache.
			settings["IMAPGATE_ROUTE_CACHE_TTL"] = "0"
		} else {
			settings["IMAPGATE_FIRST_LETTER"] = sqlFirstLetter
		}
		for k, v := range b.cfg.extraEnv {
			settings[k] = v
		}
		p, err := b.env.StartImapgate(ctx, "imapgate-sql-"+g.ip, g.ip+":9180", settings)
		if err != nil {
			return nil, err
		}
		b.addStop(p)
		m, err := b.env.StartMailProxy(ctx, "mail-sql-"+g.ip, g.ip, g.ip+":9180")
		if err != nil {
			return nil, err
		}
		b.addStop(m.Nginx)
		proxies[g.ip] = m
		if g.ttl != "0" {
			if err := warmSQLGate(g.ip); err != nil {
				return nil, err
			}
		}
	}
	return proxies, nil
}

// warmSQLGate has imapgate at ip check the warm users' logins, each from
// a network of its own (the per-network check slots would otherwise
// allow two at a time), eight at once.
func warmSQLGate(ip string) error {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for j := w; j < sqlWarmUsers; j += 8 {
				a := sqlAccount(sqlWarmIndex(j))
				if err := authOK(ip+":9180", authRequestFrom(ip, a.User, a.Password, fmt.Sprintf("10.1.%d.%d", j/250, j%250+1))); err != nil {
					errs <- fmt.Errorf("warming %s at %s: %w", a.User, ip, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// sqlWarmIndex is the j-th warm user, spread over all of them.
func sqlWarmIndex(j int) int { return j * (sqlUsers / sqlWarmUsers) }

// sqlRounds measures logins/s through each nginx, interleaved: warm sides
// log in the warm users, cold sides users spread over all 100,000 that
// no side has used yet (so that the SQL lookup misses the route cache).
func (b *bench) sqlRounds(ctx context.Context, f *sqlFigures, proxies map[string]*harness.MailProxy) error {
	conc := b.cfg.e2eConc
	var next atomic.Int64 // cold users handed out so far
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, side := range []struct {
			name, ip string
			warm     bool
			into     *[]float64
		}{
			{"SQL, cache warm", ipSQLWarm, true, &f.sqlWarm},
			{"first letter, cache warm", ipFLWarm, true, &f.flWarm},
			{"SQL, cache off", ipSQLCold, false, &f.sqlCold},
			{"first letter, cache off", ipFLCold, false, &f.flCold},
		} {
			l := closedLoop(conc, b.cfg.e2eDuration, 0, func(w, i int) error {
				var a dovecot.Account
				if side.warm {
					a = sqlAccount(sqlWarmIndex((w + conc*i + round*97) % sqlWarmUsers))
				} else {
					// 7919 is prime to 100,000: distinct users, spread.
					a = sqlAccount(int(next.Add(1)) * 7919 % sqlUsers)
				}
				return imapLogin(proxies[side.ip].IMAPAddr, a.User, a.Password)
			})
			if l.fails > 0 {
				return fmt.Errorf("%s: %d of %d logins failed, first: %v", side.name, l.fails, l.fails+len(l.lat), l.firstEr)
			}
			*side.into = append(*side.into, l.rate())
			logf("sql round %d/%d: %-24s %6.1f logins/s (p50 %.1f ms)", round, b.cfg.rounds, side.name, l.rate(), ms(percentile(l.lat, 50)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// print writes the SQL figure's rows.
func (f *sqlFigures) print(w io.Writer) {
	for _, row := range []struct {
		what      string
		sql, base []float64
	}{
		{"login cache warm (" + thousands(sqlWarmUsers) + " users logging in again), route cache off: MariaDB asked at every login", f.sqlWarm, f.flWarm},
		{"cache off: every login checked on Dovecot and looked up in MariaDB (users spread over all " + thousands(sqlUsers) + ")", f.sqlCold, f.flCold},
	} {
		s, bl := median(row.sql), median(row.base)
		fmt.Fprintf(w, "| IMAP logins/s through nginx (LOGIN+LOGOUT, c=%d), %s users in MariaDB (the Perl seed's mailaccounts, IMAPGATE_SQL_QUERY), two Dovecots, %s | %.1f | %.1f (the same users routed by first letter) | %.3f× | | |\n",
			f.conc, thousands(sqlUsers), row.what, s, bl, ratio(s, bl))
	}
}

// printRounds writes the SQL figure's rounds.
func (f *sqlFigures) printRounds(w io.Writer) {
	fmt.Fprintf(w, "- sql, logins/s: SQL warm %s; first letter warm %s; SQL cache off %s; first letter cache off %s\n",
		list(f.sqlWarm, "%.1f"), list(f.flWarm, "%.1f"), list(f.sqlCold, "%.1f"), list(f.flCold, "%.1f"))
}
