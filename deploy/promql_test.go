// Package deploy holds the checks of the shipped deployment files: the compose files, the
// Prometheus configuration and alert rules, the Grafana dashboard and the Kubernetes manifests.
// It has no code of its own.
package deploy

import (
	"slices"
	"strings"
	"testing"
)

// selector is one metric a PromQL expression reads: its name and the text of its label matchers.
type selector struct {
	name     string
	matchers string
}

// grouping keywords take a parenthesised list of label names, not metrics.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// keywords are operator words and aggregations (which may be followed by "by (...)" before
// their parenthesis), never metric names.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"atan2": true, "sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// selectors returns every metric an expression reads. It knows enough of PromQL for what is
// shipped: strings, label matchers, ranges and subqueries, durations and numbers, grouping lists,
// function calls, Grafana variables ($name, ${name}) and Grafana's label_values(metric, label).
func selectors(expr string) []selector {
	var out []selector
	i, n := 0, len(expr)
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func() {
		for i < n && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
			i++
		}
	}
	// skipTo moves past the close that balances the open at expr[i], stepping over strings.
	skipTo := func(open, close byte) string {
		start, depth := i, 0
		for i < n {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				i = skipString(expr, i)
				continue
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					i++
					return expr[start+1 : i-1]
				}
			}
			i++
		}
		return expr[start:]
	}
	readIdent := func() string {
		start := i
		for i < n && isIdent(expr[i]) {
			i++
		}
		return expr[start:i]
	}
	for i < n {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '{':
			skipTo('{', '}')
		case c == '[':
			skipTo('[', ']')
		case c == '$':
			i++
			if i < n && expr[i] == '{' {
				skipTo('{', '}')
			} else {
				readIdent()
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < n && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			id := readIdent()
			skipSpace()
			next := byte(0)
			if i < n {
				next = expr[i]
			}
			switch {
			case groupingKeywords[id] && next == '(':
				skipTo('(', ')')
			case id == "label_values" && next == '(':
				i++
				skipSpace()
				if i < n && isIdentStart(expr[i]) {
					name := readIdent()
					skipSpace()
					m := ""
					if i < n && expr[i] == '{' {
						m = skipTo('{', '}')
					}
					skipSpace()
					if i < n && expr[i] == ',' { // label_values(label) alone names no metric
						out = append(out, selector{name, m})
					}
				}
				for i < n && expr[i] != ')' {
					i++
				}
			case next == '(' || keywords[strings.ToLower(id)] || groupingKeywords[id]:
				// A function or aggregation, or an operator word.
			default:
				m := ""
				if next == '{' {
					m = skipTo('{', '}')
				}
				out = append(out, selector{id, m})
			}
		default:
			i++
		}
	}
	return out
}

// skipString returns the index just past the string literal starting at s[i].
func skipString(s string, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		if s[i] == '\\' && q != '`' {
			i++
			continue
		}
		if s[i] == q {
			return i + 1
		}
	}
	return len(s)
}

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`absent(up{job="kontextq"} == 1)`, []string{"up"}},
		{`max by (reason) (kontextq_account_paused{job="kontextq"}) > 0`, []string{"kontextq_account_paused"}},
		{`sum without (instance) (rate(a_total{x=~"a{2}|b", y!="}"}[5m] offset 1h)) / on () group_left (q) b`, []string{"a_total", "b"}},
		{`histogram_quantile(0.99, sum by (le) (rate(kontextq_generation_seconds_bucket{job="$worker_job"}[$__rate_interval])))`,
			[]string{"kontextq_generation_seconds_bucket"}},
		{`min(kontextq_unarchived_soonest_expiry_timestamp_seconds{job="kontextq"}) - time() < 3600`,
			[]string{"kontextq_unarchived_soonest_expiry_timestamp_seconds"}},
		{`x > 1e3 and y unless z[1h:5m] or 0.05 * w`, []string{"x", "y", "z", "w"}},
		{`label_values(kontextq_batch_jobs{job="$job"}, batch)`, []string{"kontextq_batch_jobs"}},
		{`label_values(asynq_queue_size, queue)`, []string{"asynq_queue_size"}},
		{`label_values(batch)`, nil},
		{`max(rate(kontextq_sweeps_total{job="$job"}[$__rate_interval])) * 60`, []string{"kontextq_sweeps_total"}},
		{`${job}`, nil},
	} {
		var got []string
		for _, s := range selectors(tc.expr) {
			got = append(got, s.name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("selectors(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	s := selectors(`rate(a{job="kontextq-worker", x="y"}[1m])`)
	if len(s) != 1 || s[0].matchers != `job="kontextq-worker", x="y"` {
		t.Errorf("matchers not kept: %+v", s)
	}
}
