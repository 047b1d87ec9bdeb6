package harness

// Directory servers for the routing scenarios: MariaDB, PostgreSQL and
// OpenLDAP's slapd, each a process of the Debian package on its own
// directory and loopback address (never the system service), started only
// by the scenarios that need one. Each can be stopped and started again
// mid-scenario, keeping its data, to show a directory outage and the
// recovery.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Loopback addresses of the directory servers and the Cyrus deployment.
const (
	IPMariaDB  = "127.0.20.1"
	IPPostgres = "127.0.20.2"
	IPSlapd    = "127.0.20.3"
)

// DirectoryUser is a user the directories know, and the backend they name.
type DirectoryUser struct {
	User string
	// Backend is what the directory answers: a backend name, or a host.
	Backend string
}

// DirectoryUsers are the rows of every directory: the Perl seed's
// mail_server names for the users of the test Dovecots, and one user whose
// row names mailhost02 by its address (a host answer). Users of the
// passwd-files not listed here (zoe, sam, ...) are unknown to the
// directories.
var DirectoryUsers = []DirectoryUser{
	{"alice", "mailhost01"}, {"carol", "mailhost01"}, {"frank", "mailhost01"}, {"gina", "mailhost01"},
	{"bob", "mailhost02"}, {"dave", "mailhost02"}, {"erin", "mailhost02"},
	{"amy", IPMailhost02},
}

// The directory accounts imapgate uses. The passwords have characters that
// need percent-encoding in a URL, so that the tests prove the encoding and
// that the password never reaches an error or a log.
const (
	DirectoryDB       = "mail"
	DirectoryAccount  = "imapgate"
	DirectoryPassword = "dir-Pa55:w/rd@x"
	LDAPBaseDN        = "ou=people,dc=example,dc=org"
	LDAPBindDN        = "cn=imapgate,dc=example,dc=org"
	LDAPBindPassword  = "ldap-Pa55 w0rd"
)

// Server is a directory server the harness runs.
type Server struct {
	// Name says which server it is.
	Name string
	// Addr is host:port of its listener.
	Addr string
	// Dir holds its configuration, data and log.
	Dir string

	launch func() (*Process, error)
	ready  func(ctx context.Context) error
	// stopSignal, when set, is sent instead of SIGTERM (PostgreSQL's
	// SIGTERM waits for its clients to leave; SIGINT does not).
	stopSignal syscall.Signal
	proc       *Process
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections and answers.
func (s *Server) Start(ctx context.Context) error {
	if s.proc != nil {
		return fmt.Errorf("%s already running", s.Name)
	}
	p, err := s.launch()
	if err != nil {
		return err
	}
	s.proc = p
	if err := waitAccept(ctx, p, s.Addr); err != nil {
		s.Stop()
		return err
	}
	if s.ready != nil {
		if err := s.ready(ctx); err != nil {
			out := tail(p.Output(), 20)
			s.Stop()
			return fmt.Errorf("%s not ready: %w\n%s", s.Name, err, out)
		}
	}
	return nil
}

// Stop stops the server, keeping its data, so that Start brings it back;
// afterwards its port refuses connections.
func (s *Server) Stop() error {
	if s.proc == nil {
		return nil
	}
	if s.stopSignal != 0 {
		_ = s.proc.Signal(s.stopSignal)
		select {
		case <-s.proc.Exited():
		case <-time.After(20 * time.Second):
		}
	}
	err := s.proc.Stop(20 * time.Second)
	s.proc = nil
	return err
}

// Close stops the server for good.
func (s *Server) Close() error { return s.Stop() }

// Log returns what the server printed since its last start.
func (s *Server) Log() string {
	if s.proc == nil {
		return ""
	}
	return s.proc.Output()
}

// newServerDir makes the server's directory under the run directory.
func (e *Env) newServerDir(name string) (string, error) {
	dir := filepath.Join(e.Dir, name)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// logStart logs how long starting a server took, setup included.
func (e *Env) logStart(name string, start time.Time) {
	e.logf("imapgate-it: %s ready in %v (setup included)", name, time.Since(start).Round(time.Millisecond))
}

// run runs a setup command, returning its output in the error.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 20))
	}
	return nil
}

// seedRows returns the mailaccounts rows as SQL values, the password
// column holding a crypt(3) placeholder as in the Perl seed (imapgate
// never reads it).
func seedRows() string {
	var rows []string
	for _, u := range DirectoryUsers {
		rows = append(rows, fmt.Sprintf("('%s', '*', '%s')", u.User, u.Backend))
	}
	return strings.Join(rows, ",\n  ")
}

// mailaccountsSQL is the Perl seed's table, as both databases take it.
func mailaccountsSQL() string {
	return `CREATE TABLE mailaccounts (
  username VARCHAR(255) NOT NULL PRIMARY KEY,
  password VARCHAR(255) NOT NULL,
  mail_server VARCHAR(255)
);
INSERT INTO mailaccounts (username, password, mail_server) VALUES
  ` + seedRows() + ";\n"
}

// StartMariaDB initialises a MariaDB data directory with the Perl seed's
// mailaccounts table and user imapgate, and starts mariadbd on
// IPMariaDB:3306. The server keeps its defaults; only its files, address
// and the log are set.
func (e *Env) StartMariaDB(ctx context.Context) (*Server, error) {
	for _, c := range []string{"mariadbd", "mariadb-install-db", "mariadb"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, &MissingError{What: c + " (mariadb-server; run integration/install-deps.sh)"}
		}
	}
	defer e.logStart("mariadb", time.Now())
	dir, err := e.newServerDir("mariadb")
	if err != nil {
		return nil, err
	}
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "mysqld.sock")
	if err := run(ctx, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=socket", "--skip-test-db"); err != nil {
		return nil, err
	}
	s := &Server{Name: "mariadb", Addr: IPMariaDB + ":3306", Dir: dir}
	s.launch = func() (*Process, error) {
		cmd := exec.Command("mariadbd", "--no-defaults", "--datadir="+data, "--socket="+sock,
			"--bind-address="+IPMariaDB, "--port=3306", "--pid-file="+filepath.Join(dir, "mariadbd.pid"),
			// mariadbd refuses to run as root unless told to.
			"--user=root",
			// Names of clients are not resolved: the tests' clients are
			// addresses, and the machine has no DNS for them.
			"--skip-name-resolve")
		return startProcess("mariadbd", filepath.Join(dir, "mariadbd.log"), e.pidDir, cmd)
	}
	setup := fmt.Sprintf("CREATE DATABASE %s;\nUSE %s;\n%sCREATE USER '%s'@'%%' IDENTIFIED BY '%s';\nGRANT SELECT ON %s.mailaccounts TO '%s'@'%%';\n",
		DirectoryDB, DirectoryDB, mailaccountsSQL(), DirectoryAccount, DirectoryPassword, DirectoryDB, DirectoryAccount)
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "mariadb", "--no-defaults", "-S", sock, "-u", "root")
	cmd.Stdin = strings.NewReader(setup)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.Close()
		return nil, fmt.Errorf("mariadb setup: %v\n%s", err, out)
	}
	return s, nil
}

// MariaDBURL is IMAPGATE_SQL_URL for the harness's MariaDB.
func MariaDBURL() string {
	return "mysql://" + DirectoryAccount + ":" + urlEscape(DirectoryPassword) + "@" + IPMariaDB + ":3306/" + DirectoryDB
}

// PostgresURL is IMAPGATE_SQL_URL for the harness's PostgreSQL.
func PostgresURL() string {
	return "postgres://" + DirectoryAccount + ":" + urlEscape(DirectoryPassword) + "@" + IPPostgres + ":5432/" + DirectoryDB + "?sslmode=disable"
}

// urlEscape percent-encodes everything but letters, digits and '-', as a
// URL's password wants.
func urlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// postgresBin is where Debian's PostgreSQL 15 keeps its programs.
const postgresBin = "/usr/lib/postgresql/15/bin"

// StartPostgres initialises a PostgreSQL 15 cluster with the same table
// and user, and starts postgres on IPPostgres:5432, as the postgres system
// user (PostgreSQL refuses to run as root). Local connections trust the
// system user; TCP ones need the password (scram-sha-256, the default).
func (e *Env) StartPostgres(ctx context.Context) (*Server, error) {
	for _, c := range []string{postgresBin + "/initdb", postgresBin + "/postgres", postgresBin + "/psql"} {
		if _, err := os.Stat(c); err != nil {
			return nil, &MissingError{What: c + " (postgresql-15; run integration/install-deps.sh)"}
		}
	}
	defer e.logStart("postgres", time.Now())
	dir, err := e.newServerDir("postgres")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := run(ctx, "chown", "postgres:postgres", dir); err != nil {
		return nil, err
	}
	// --no-sync: a test cluster need not survive a power cut, and
	// fsyncing every new file is most of initdb's time.
	if err := run(ctx, "runuser", "-u", "postgres", "--", postgresBin+"/initdb", "-D", data, "-U", "postgres",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"); err != nil {
		return nil, err
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		return nil, &MissingError{What: "the postgres system user (postgresql-15)"}
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	s := &Server{Name: "postgres", Addr: IPPostgres + ":5432", Dir: dir, stopSignal: syscall.SIGINT}
	s.launch = func() (*Process, error) {
		cmd := exec.Command(postgresBin+"/postgres", "-D", data,
			"-c", "listen_addresses="+IPPostgres, "-p", "5432", "-k", dir)
		// Run as postgres itself, not under runuser, so that stopping it
		// stops postgres and not only a parent that leaves it behind.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return startProcess("postgres", filepath.Join(dir, "postgres.log"), e.pidDir, cmd)
	}
	// postgres accepts connections before it takes queries (after a
	// restart it first recovers): ready is when a query works.
	s.ready = func(ctx context.Context) error {
		for {
			err := run(ctx, "runuser", "-u", "postgres", "--", postgresBin+"/psql",
				"-h", dir, "-p", "5432", "-U", "postgres", "-d", "postgres", "-qAtc", "select 1")
			if err == nil || ctx.Err() != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	psql := func(db, sql string) error {
		cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", postgresBin+"/psql",
			"-h", dir, "-p", "5432", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q")
		cmd.Stdin = strings.NewReader(sql)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("psql: %v\n%s", err, out)
		}
		return nil
	}
	err = psql("postgres", fmt.Sprintf("CREATE DATABASE %s;\nCREATE ROLE %s LOGIN PASSWORD '%s';\n", DirectoryDB, DirectoryAccount, DirectoryPassword))
	if err == nil {
		err = psql(DirectoryDB, mailaccountsSQL()+fmt.Sprintf("GRANT SELECT ON mailaccounts TO %s;\n", DirectoryAccount))
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}
