package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The PromQL words that are never a metric name. Aggregations are listed
// because "sum by (x) (…)" puts a keyword, not "(", after the name.
var (
	promqlAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
		"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	// promqlLabelLists are followed by a parenthesised list of label names.
	promqlLabelLists = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	promqlKeywords   = []string{"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
)

// promqlMetricNames returns the metric names an expression selects, in
// order of appearance, or an error for what it cannot judge (a selector by
// __name__, an unbalanced bracket or quote).
//
// It is a small lexer rather than Prometheus's own parser, whose module
// would bring most of Prometheus into go.sum for one test: it skips
// strings, label matchers {…}, ranges […], Grafana's $variables, numbers
// and durations, and the label lists after by/without/on/ignoring/
// group_left/group_right; an identifier left over is a function when "("
// follows it, a keyword or aggregation when listed above, else a metric
// name.
func promqlMetricNames(expr string) ([]string, error) {
	var names []string
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := promqlStringEnd(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{' || c == '[':
			close := byte('}')
			if c == '[' {
				close = ']'
			}
			end, err := promqlBracketEnd(s, i, c, close)
			if err != nil {
				return nil, err
			}
			if c == '{' && strings.Contains(s[i:end], "__name__") {
				return nil, fmt.Errorf("%q selects by __name__; name the metric", s[i:end])
			}
			i = end
		case c == '$':
			// Grafana variable: $name or ${name}.
			i++
			if i < len(s) && s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unclosed ${ in %q", expr)
				}
				i += end + 1
				continue
			}
			for i < len(s) && isIdentByte(s[i], false) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentByte(s[i], false) || s[i] == '.' || (s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++
			}
		case isIdentByte(c, true):
			start := i
			for i < len(s) && isIdentByte(s[i], false) {
				i++
			}
			word := s[start:i]
			skipSpace()
			switch {
			case slices.Contains(promqlLabelLists, strings.ToLower(word)):
				if i < len(s) && s[i] == '(' {
					end, err := promqlBracketEnd(s, i, '(', ')')
					if err != nil {
						return nil, err
					}
					i = end
				}
			case slices.Contains(promqlAggregations, strings.ToLower(word)),
				slices.Contains(promqlKeywords, strings.ToLower(word)):
			case i < len(s) && s[i] == '(':
				// A function call; its arguments are read on.
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names, nil
}

func isIdentByte(c byte, first bool) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}

// promqlStringEnd returns the index after the string that starts at s[i].
func promqlStringEnd(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unclosed string in %q", s)
}

// promqlBracketEnd returns the index after the bracket that opens at s[i],
// skipping strings inside it.
func promqlBracketEnd(s string, i int, open, close byte) (int, error) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := promqlStringEnd(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unclosed %c in %q", open, s)
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`imapgate_backend_up == 0`, []string{"imapgate_backend_up"}},
		{`sum by (instance, job) (rate(imapgate_throttled_total[5m])) > 1 and sum(rate(imapgate_requests_total{outcome="ok"}[5m]))`,
			[]string{"imapgate_throttled_total", "imapgate_requests_total"}},
		{`histogram_quantile(0.99, sum by (backend, le) (rate(x_bucket{instance=~"$instance",le!="+Inf"}[$__rate_interval])))`, []string{"x_bucket"}},
		{`a >= on (instance, job) group_left (backend) max by (instance) (b)`, []string{"a", "b"}},
		{`sum(a) without (by) / ignoring(x) count(b offset 5m) * 1e-3 + bool 2`, []string{"a", "b"}},
		{`label_replace(a, "dst", "$1 {x}", "src", "(.*)") or vector(0) unless c:recorded:rate5m`, []string{"a", "c:recorded:rate5m"}},
		{`topk(3, sum by (le) (a{l='q"uote}'}))`, []string{"a"}},
		{`count(a{job="x"} == 0) or on() vector(0)`, []string{"a"}},
		{`rate(${metric}[5m]) + b`, []string{"b"}},
	} {
		got, err := promqlMetricNames(tc.expr)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
	for _, bad := range []string{`{__name__=~"imapgate_.*"}`, `rate(a[5m)`, `a{l="x}`} {
		if got, err := promqlMetricNames(bad); err == nil {
			t.Errorf("promqlMetricNames(%q) = %q, want an error", bad, got)
		}
	}
}
