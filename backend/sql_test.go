package backend

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapgate/imapgate/imapcheck"
)

// fakeDB is a database/sql driver over a map, for the SQL selector's unit
// tests (the real MariaDB and PostgreSQL are in the integration suite).
// Its one table answers any query: the row of the user passed as the
// only argument.
type fakeDB struct {
	mu      sync.Mutex
	rows    map[string][]driver.Value
	cols    []string
	err     error
	queries []fakeQuery
}

type fakeQuery struct {
	sql  string
	args []driver.NamedValue
}

func (f *fakeDB) Connect(context.Context) (driver.Conn, error) { return fakeConn{f}, nil }
func (f *fakeDB) Driver() driver.Driver                        { return nil }

type fakeConn struct{ db *fakeDB }

func (c fakeConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("fake: no Prepare") }
func (c fakeConn) Close() error                        { return nil }
func (c fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("fake: no transactions") }

func (c fakeConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	f := c.db
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, fakeQuery{query, args})
	if f.err != nil {
		return nil, f.err
	}
	if len(args) != 1 {
		return nil, errors.New("fake: want one argument")
	}
	user, _ := args[0].Value.(string)
	r := &fakeRows{cols: f.cols}
	if row, ok := f.rows[user]; ok {
		r.rows = [][]driver.Value{row}
	}
	return r, nil
}

type fakeRows struct {
	cols []string
	rows [][]driver.Value
}

func (r *fakeRows) Columns() []string { return r.cols }
func (r *fakeRows) Close() error      { return nil }
func (r *fakeRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}

func newFakeSQL(t *testing.T, f *fakeDB, secret string) *SQL {
	t.Helper()
	backends, err := ParseBackendsWith("mailhost01=192.168.1.22;mailhost02=192.168.1.33", Defaults{Ports: stdPorts})
	if err != nil {
		t.Fatal(err)
	}
	s := newSQL(sql.OpenDB(f), SQLConfig{Query: "select mail_server from mailaccounts where username=? limit 1",
		Backends: backends, Defaults: Defaults{Ports: stdPorts, Security: imapcheck.SecurityTLS}}, time.Second, secret)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLSelect(t *testing.T) {
	f := &fakeDB{cols: []string{"mail_server"}, rows: map[string][]driver.Value{
		"alice": {"mailhost01"},
		"bob":   {" mailhost02 "},
		"carol": {"mail.example.org"},
		"dave":  {nil},
		"erin":  {""},
		"frank": {"bad host!"},
	}}
	s := newFakeSQL(t, f, "")
	ctx := context.Background()
	for user, want := range map[string]string{"alice": "mailhost01", "bob": "mailhost02", "carol": "mail.example.org", "dave": "", "erin": "", "nobody": ""} {
		b, err := s.Select(ctx, user)
		if err != nil {
			t.Fatalf("Select(%s): %v", user, err)
		}
		if got := backendName(b); got != want {
			t.Errorf("Select(%s) = %q, want %q", user, got, want)
		}
	}
	carol, _ := s.Select(ctx, "carol")
	if got := carol.Check[imapcheck.IMAP]; got != ep("mail.example.org", 993) {
		t.Errorf("host answer with implicit TLS checks on %v, want mail.example.org:993", got)
	}
	var bad *AnswerError
	for _, user := range []string{"frank"} {
		if _, err := s.Select(ctx, user); !errors.As(err, &bad) {
			t.Errorf("Select(%s): %v, want an AnswerError", user, err)
		}
	}
	// The user travels as the parameter; the SQL text is the query.
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.queries {
		if q.sql != "select mail_server from mailaccounts where username=? limit 1" || len(q.args) != 1 {
			t.Fatalf("query %q with %d args", q.sql, len(q.args))
		}
	}
}

func TestSQLSelectSeedTableWithPasswordColumn(t *testing.T) {
	// The Perl seed selects the password too; extra columns are ignored.
	f := &fakeDB{cols: []string{"mail_server", "password"}, rows: map[string][]driver.Value{"alice": {"mailhost02", "$1$abc$xyz"}}}
	s := newFakeSQL(t, f, "")
	b, err := s.Select(context.Background(), "alice")
	if err != nil || backendName(b) != "mailhost02" {
		t.Fatalf("Select = %v, %v; want mailhost02", b, err)
	}
}

func TestSQLSelectErrorsAreRedacted(t *testing.T) {
	const secret = "s3cr3t:pw@x"
	f := &fakeDB{cols: []string{"mail_server"}, err: errors.New("Access denied for user 'imapgate' (password " + secret + ") at s3cr3t%3Apw%40x")}
	s := newFakeSQL(t, f, secret)
	_, err := s.Select(context.Background(), "alice")
	if err == nil {
		t.Fatal("no error from a failing database")
	}
	for _, form := range []string{secret, "s3cr3t%3Apw%40x"} {
		if strings.Contains(err.Error(), form) {
			t.Fatalf("error %q contains the password", err)
		}
	}
	if !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("error %q lost its cause", err)
	}
	if err := s.Ping(context.Background()); err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("Ping error %q contains the password", err)
	}
}

func TestSQLSelectImplausibleUserNotQueried(t *testing.T) {
	f := &fakeDB{cols: []string{"mail_server"}}
	s := newFakeSQL(t, f, "")
	for _, u := range []string{"", "a\x00", "\xc3"} {
		if b, err := s.Select(context.Background(), u); b != nil || err != nil {
			t.Errorf("Select(%q) = %v, %v", u, b, err)
		}
	}
	if len(f.queries) != 0 {
		t.Errorf("%d queries for implausible users", len(f.queries))
	}
}

func backendName(b *Backend) string {
	if b == nil {
		return ""
	}
	return b.Name
}

func TestOpenSQLErrors(t *testing.T) {
	const q = "select mail_server from mailaccounts where username=? limit 1"
	tests := []struct {
		url, query string
		want       string
	}{
		{"mysql://u:pw@db.example/mail", "select 1", "want exactly one"},
		{"mysql://u:pw@db.example/mail", "select a from t where u=? or v=?", "2 '?' placeholders"},
		{"mysql://u:pw@db.example/mail", "select a from t where u=$1", "not $1"},
		{"postgres://u:pw@db.example/mail", q, "PostgreSQL uses $1"},
		{"postgres://u:pw@db.example/mail", "select a from t where u=$1 and v=$2", "other than $1"},
		{"mysql://u:pw@db.example/", q, "one database name"},
		{"mysql://u:pw@db.example/a/b", q, "one database name"},
		{"mysql://u:pw@:3306/mail", q, "empty host"},
		{"mysql://u:pw@db.example/mail?parseTime=maybe", q, "invalid bool value"},
		{"mysql://u:pw@db.example/mail#frag", q, "%23"},
		{"sqlite:///tmp/x.db", q, "scheme \"sqlite\""},
		{"u:pw@tcp(db)/mail", q, "want mysql://"},
		{"mysql://u:pw@db.example/mail", "  ", "empty query"},
		{"mysql://u:pw@db.example/mail", "select a from t where u='?", "unterminated"},
	}
	for _, tt := range tests {
		s, err := OpenSQL(SQLConfig{URL: tt.url, Query: tt.query})
		if err == nil {
			s.Close()
			t.Errorf("OpenSQL(%q, %q): no error", tt.url, tt.query)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("OpenSQL(%q, %q) = %q, want %q in it", tt.url, tt.query, err, tt.want)
		}
		if strings.Contains(err.Error(), "pw") {
			t.Errorf("OpenSQL(%q) error %q quotes the password", tt.url, err)
		}
		var ce *ConfigError
		if wantField := map[bool]string{true: "Query", false: "URL"}[strings.Contains(err.Error(), "query")]; !errors.As(err, &ce) || ce.Field != wantField {
			t.Errorf("OpenSQL(%q, %q): %v is not a ConfigError for %s", tt.url, tt.query, err, wantField)
		}
	}
}

func TestOpenSQLURLErrorsNeverQuoteThePassword(t *testing.T) {
	// A password with an unencoded '/' makes the URL's host part end early:
	// net/url's error would quote it.
	for _, u := range []string{"mysql://u:pa/ss@db/mail", "mysql://u:pa ss@db/mail", "postgres://u:pa/ss@db/mail", "postgres://u:p%zz@db/mail"} {
		s, err := OpenSQL(SQLConfig{URL: u, Query: "select 1 where x=?"})
		if err == nil {
			s.Close()
			continue
		}
		for _, part := range []string{"pa/ss", "pa ss", "p%zz", ":pa"} {
			if strings.Contains(err.Error(), part) {
				t.Errorf("OpenSQL(%q): error %q contains password part %q", u, err, part)
			}
		}
	}
}

func TestMySQLConfig(t *testing.T) {
	s, err := OpenSQL(SQLConfig{URL: "mysql://imapgate:p%40ss%3Aw%2Fd@127.0.20.1/mail?charset=utf8mb4&tls=false",
		Query: "select mail_server from mailaccounts where username=? limit 1", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("OpenSQL: %v", err)
	}
	s.Close()
	u := mustURL(t, "mysql://imapgate:p%40ss%3Aw%2Fd@[::1]:3307/mail?charset=utf8mb4")
	mc, err := mysqlConfig(u, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if mc.User != "imapgate" || mc.Passwd != "p@ss:w/d" || mc.Net != "tcp" || mc.Addr != "[::1]:3307" || mc.DBName != "mail" {
		t.Errorf("config %+v", mc)
	}
	if mc.Timeout != 2*time.Second || mc.ReadTimeout != 2*time.Second {
		t.Errorf("timeouts %v/%v, want the lookup timeout", mc.Timeout, mc.ReadTimeout)
	}
	if dsn := mc.FormatDSN(); !strings.Contains(dsn, "charset=utf8mb4") {
		t.Errorf("DSN %s lost the URL's parameters", dsn)
	}
	mc, err = mysqlConfig(mustURL(t, "mysql://u@db.example/mail"), time.Second)
	if err != nil || mc.Addr != "db.example:3306" {
		t.Errorf("default port: %v, %v", mc, err)
	}
}

func TestCheckQuery(t *testing.T) {
	good := map[string]sqlDialect{
		"select mail_server from mailaccounts where username=? limit 1":                       dialectMySQL,
		"select password,mail_server from mailaccounts where username=? limit 1":              dialectMySQL,
		"select h from t where u = ? and note <> 'what?' -- really?\n and x = \"y?\" /* ? */": dialectMySQL,
		"select h from t where u=? # trailing ?":                                              dialectMySQL,
		"select `h?` from t where u=? and v='it''s \\' ?'":                                    dialectMySQL,
		"select mail_server from mailaccounts where username=$1 limit 1":                      dialectPostgres,
		"select h from t where u=$1 or lower(u)=lower($1)":                                    dialectPostgres,
		"select h from t where u=$1 and tags ? 'x' and note = $$ $2 $$":                       dialectPostgres,
		"select h from t where u=$1 and note = $q$ $2 $q$ -- $3":                              dialectPostgres,
	}
	for q, d := range good {
		if err := checkQuery(q, d); err != nil {
			t.Errorf("checkQuery(%q): %v", q, err)
		}
	}
	bad := map[string]sqlDialect{
		"select h from t where u=? or v=?":   dialectMySQL,
		"select h from t":                    dialectMySQL,
		"select h from t where u='?'":        dialectMySQL,
		"select h from t where u=$1":         dialectMySQL,
		"select h from t where u=$2":         dialectPostgres,
		"select h from t where u=$10":        dialectPostgres,
		"select h from t where u='$1'":       dialectPostgres,
		"select h from t where u=? /* open ": dialectMySQL,
	}
	for q, d := range bad {
		if err := checkQuery(q, d); err == nil {
			t.Errorf("checkQuery(%q): no error", q)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
