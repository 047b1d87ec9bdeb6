package backend

import (
	"errors"
	"fmt"
	"strings"
)

// sqlDialect is the placeholder style of a database.
type sqlDialect int

const (
	dialectMySQL    sqlDialect = iota // ? placeholders, MySQL/MariaDB
	dialectPostgres                   // $1 placeholders, PostgreSQL
)

// checkQuery checks that query takes exactly one parameter, the user, in
// the dialect's placeholder: one '?' for MySQL, '$1' (any number of
// times, and no '$2' or higher) for PostgreSQL. Placeholders inside
// quoted strings, quoted names and comments do not count. The scanner is
// ours because neither driver checks a query without a server; the
// server still checks it at the first lookup.
func checkQuery(query string, dialect sqlDialect) error {
	if strings.TrimSpace(query) == "" {
		return errors.New("empty query")
	}
	marks, dollars, err := scanPlaceholders(query, dialect)
	if err != nil {
		return err
	}
	switch dialect {
	case dialectMySQL:
		if dollars > 0 || marks != 1 {
			return fmt.Errorf("query has %d '?' placeholders: want exactly one, for the user (MySQL/MariaDB use ?, not $1)", marks)
		}
	case dialectPostgres:
		if dollars < 0 {
			return errors.New("query has a placeholder other than $1: want only $1, for the user")
		}
		if dollars == 0 {
			return errors.New("query has no $1 placeholder: want $1 for the user (PostgreSQL uses $1, not ?)")
		}
	}
	return nil
}

// scanPlaceholders counts the '?' outside quotes and comments, and the
// uses of $1; dollars is -1 when some other $n is used.
func scanPlaceholders(q string, dialect sqlDialect) (marks, dollars int, err error) {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"' || c == '`' && dialect == dialectMySQL:
			end := closingQuote(q, i, dialect)
			if end < 0 {
				return 0, 0, fmt.Errorf("unterminated %c quote", c)
			}
			i = end
		case c == '-' && strings.HasPrefix(q[i:], "--"), c == '#' && dialect == dialectMySQL:
			if nl := strings.IndexByte(q[i:], '\n'); nl >= 0 {
				i += nl
			} else {
				i = len(q)
			}
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return 0, 0, errors.New("unterminated /* comment")
			}
			i += 2 + end + 1
		case c == '?':
			marks++
		case c == '$' && dialect == dialectPostgres:
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				if q[i+1:j] != "1" {
					return marks, -1, nil
				}
				dollars++
				i = j - 1
				continue
			}
			// $tag$ ... $tag$ is a string.
			if end := closingDollarQuote(q, i); end > 0 {
				i = end
			}
		}
	}
	return marks, dollars, nil
}

// closingQuote returns the index of the quote that ends the one at q[i]:
// a doubled quote stands for itself, and in MySQL a backslash escapes the
// next byte inside strings.
func closingQuote(q string, i int, dialect sqlDialect) int {
	quote := q[i]
	for j := i + 1; j < len(q); j++ {
		switch {
		case q[j] == '\\' && dialect == dialectMySQL && quote != '`':
			j++
		case q[j] == quote && j+1 < len(q) && q[j+1] == quote:
			j++
		case q[j] == quote:
			return j
		}
	}
	return -1
}

// closingDollarQuote returns the index of the last byte of the
// $tag$...$tag$ string that starts at q[i], or -1 when q[i] starts none.
func closingDollarQuote(q string, i int) int {
	j := i + 1
	for j < len(q) && (q[j] == '_' || q[j] >= 'a' && q[j] <= 'z' || q[j] >= 'A' && q[j] <= 'Z' || q[j] >= '0' && q[j] <= '9') {
		j++
	}
	if j >= len(q) || q[j] != '$' {
		return -1
	}
	tag := q[i : j+1]
	end := strings.Index(q[j+1:], tag)
	if end < 0 {
		return -1
	}
	return j + 1 + end + len(tag) - 1
}
