package backend

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultSQLMaxConns bounds an SQL directory's connection pool when
// SQLConfig.MaxConns is zero. Lookups are short and cached: a few
// connections serve hundreds of logins a second.
const DefaultSQLMaxConns = 4

// SQLConfig configures an SQL directory (IMAPGATE_SQL_*).
type SQLConfig struct {
	// URL names the database: mysql://user:password@host[:port]/database
	// for MySQL and MariaDB (query parameters are go-sql-driver/mysql's
	// DSN parameters), postgres://... or postgresql://... for PostgreSQL
	// (pgx's URL, parameters included). Special characters in the user
	// name and password must be percent-encoded.
	URL string
	// Query selects the user's backend: exactly one parameter, the user,
	// in the database's placeholder (? for MySQL, $1 for PostgreSQL); the
	// first column of the first row is a backend name or a host. The Perl
	// seed's "select mail_server from mailaccounts where username=? limit 1"
	// works as it is.
	Query string
	// Backends are the backends an answer may name; any other answer is a
	// host on the default ports.
	Backends map[string]*Backend
	// Defaults are the ports and check TLS mode of a host answer.
	Defaults Defaults
	// MaxConns bounds the open connections; zero means DefaultSQLMaxConns.
	MaxConns int
	// Timeout bounds one lookup, waiting for a connection and connecting
	// included; zero means DefaultLookupTimeout.
	Timeout time.Duration
}

// SQL is a Source that looks users up in a database through database/sql
// with a bounded pool. The user is always a query parameter, never part
// of the SQL text. Its errors never contain the URL's password.
type SQL struct {
	db      *sql.DB
	query   string
	timeout time.Duration
	answers *answers
	secret  string
}

// OpenSQL checks cfg and prepares the pool. A bad field is a
// *ConfigError naming it. It does not connect: a
// database that is down at start is a directory that is down, reported
// by Ping and by lookups, not a reason not to start.
func OpenSQL(cfg SQLConfig) (*SQL, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultLookupTimeout
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Error quotes the whole URL, password included.
		return nil, configError("URL", errors.New("sql: URL: not a valid URL (percent-encode special characters in the user name and password)"))
	}
	password, _ := u.User.Password()
	var db *sql.DB
	var dialect sqlDialect
	switch strings.ToLower(u.Scheme) {
	case "mysql":
		dialect = dialectMySQL
		mc, err := mysqlConfig(u, timeout)
		if err != nil {
			return nil, configError("URL", redact(fmt.Errorf("sql: URL: %w", err), password))
		}
		conn, err := mysql.NewConnector(mc)
		if err != nil {
			return nil, configError("URL", redact(fmt.Errorf("sql: URL: %w", err), password))
		}
		db = sql.OpenDB(conn)
	case "postgres", "postgresql":
		dialect = dialectPostgres
		pc, err := pgx.ParseConfig(cfg.URL)
		if err != nil {
			return nil, configError("URL", redact(fmt.Errorf("sql: URL: %w", err), password))
		}
		if pc.ConnectTimeout == 0 || pc.ConnectTimeout > timeout {
			pc.ConnectTimeout = timeout
		}
		db = stdlib.OpenDB(*pc)
	default:
		return nil, configError("URL", fmt.Errorf("sql: URL: scheme %q: want mysql:// (MySQL, MariaDB) or postgres:// (PostgreSQL)", u.Scheme))
	}
	if err := checkQuery(cfg.Query, dialect); err != nil {
		db.Close()
		return nil, configError("Query", fmt.Errorf("sql: query: %w", err))
	}
	return newSQL(db, cfg, timeout, password), nil
}

// newSQL wraps an opened pool; tests pass one of a fake driver.
func newSQL(db *sql.DB, cfg SQLConfig, timeout time.Duration, secret string) *SQL {
	n := cfg.MaxConns
	if n <= 0 {
		n = DefaultSQLMaxConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	// Connections idle this long are closed: after a database restart the
	// pool then holds fewer dead connections to discover.
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &SQL{db: db, query: cfg.Query, timeout: timeout,
		answers: newAnswers(cfg.Backends, cfg.Defaults), secret: secret}
}

// mysqlConfig turns mysql://user:password@host:port/database?params into
// the driver's configuration. The parameters go through the driver's own
// DSN parser, given without the credentials so that none of its errors
// can quote them.
func mysqlConfig(u *url.URL, timeout time.Duration) (*mysql.Config, error) {
	if u.Opaque != "" || u.Host == "" {
		return nil, errors.New("want mysql://user:password@host[:port]/database")
	}
	if u.Hostname() == "" {
		return nil, errors.New("empty host")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "3306")
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	if dbName == "" || strings.Contains(dbName, "/") {
		return nil, errors.New("want one database name after the host: mysql://user:password@host[:port]/database")
	}
	if u.Fragment != "" {
		return nil, errors.New("a fragment (#...) is not allowed; percent-encode '#' in a password as %23")
	}
	mc, err := mysql.ParseDSN("tcp(" + addr + ")/?" + u.RawQuery)
	if err != nil {
		return nil, err
	}
	mc.User = u.User.Username()
	mc.Passwd, _ = u.User.Password()
	mc.DBName = dbName
	// The driver's own log (connection trouble, printed to stderr) stays
	// out of imapgate's output, which is slog only; what it reports
	// reaches the caller as errors, or is retried.
	mc.Logger = &mysql.NopLogger{}
	for _, d := range []*time.Duration{&mc.Timeout, &mc.ReadTimeout, &mc.WriteTimeout} {
		if *d == 0 {
			*d = timeout
		}
	}
	return mc, nil
}

// Select runs the query for user and maps the first column of the first
// row to a backend. No row, or a NULL or empty value, is no such user;
// a database error (down, slow, a wrong query) is an error.
func (s *SQL) Select(ctx context.Context, user string) (*Backend, error) {
	if !plausibleUser(user) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	value, found, err := s.lookup(ctx, user)
	if err != nil {
		return nil, redact(fmt.Errorf("sql: %w", err), s.secret)
	}
	if !found {
		return nil, nil
	}
	return s.answers.backend(value)
}

// lookup returns the first column of the first row for user.
func (s *SQL) lookup(ctx context.Context, user string) (string, bool, error) {
	rows, err := s.db.QueryContext(ctx, s.query, user)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return "", false, rows.Err()
	}
	cols, err := rows.Columns()
	if err != nil {
		return "", false, err
	}
	var first sql.NullString
	dest := make([]any, len(cols))
	dest[0] = &first
	for i := 1; i < len(dest); i++ {
		dest[i] = new(sql.RawBytes) // the seed's password column, unused
	}
	if err := rows.Scan(dest...); err != nil {
		return "", false, err
	}
	if err := rows.Close(); err != nil {
		return "", false, err
	}
	return first.String, first.Valid, nil
}

// Ping checks that the database answers.
func (s *SQL) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return redact(s.db.PingContext(ctx), s.secret)
}

// Close closes the pool.
func (s *SQL) Close() error { return s.db.Close() }
