package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Markdown writes the results as two markdown tables: every figure of kontextq and the naive
// client side by side for each case, then each target of the issue with kontextq's figure, the
// naive client's and their ratio. The settings that produced them follow.
func Markdown(w io.Writer, o Options, rs []Result) error {
	conc := o.NaiveConcurrency
	_ = o.defaults()
	o.NaiveConcurrency = conc
	var b strings.Builder
	b.WriteString("| case | scale | client | jobs | time (ideal) | time vs ideal | utilisation over the span (whole windows) | 429s (per 100 accepted) | 429s after the first 3 windows | completion → archived p50 / p95 | polls per job | batch behind done after | archived / failed | paid twice | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		row(&b, r, r.Kontextq, verdict(r))
		if r.Naive != nil {
			row(&b, r, *r.Naive, "")
		}
	}
	b.WriteString("\n| case | scale | figure | kontextq | target | naive | kontextq ÷ naive |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		for _, s := range summary(r) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Case.Name, r.Scale.Name, s.figure, s.kontextq, s.target, s.naive, s.ratio)
		}
	}
	var scales []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.Scale.Name] {
			seen[r.Scale.Name] = true
			conc := o.NaiveConcurrency
			if conc == 0 {
				conc = r.Scale.Limit
			}
			scales = append(scales, fmt.Sprintf("%s: true limit %d per %s, median generation %s (lognormal, σ 0.5), record-info budget %d per %s, "+
				"naive client of %d goroutines per process sleeping %s on a 429 or 455 and polling every %s",
				r.Scale.Name, r.Scale.Limit, r.Scale.Window, r.Scale.GenMedian, kiePollEvents, r.Scale.compress(kiePollPer),
				conc, r.Scale.compress(naiveSleepOn429), r.Scale.compress(naivePollEvery)))
		}
	}
	fmt.Fprintf(&b, "\nScales: %s. kontextq: the binary's defaults (config.Default through internal/app), told the account's rates; "+
		"%d jobs per case unless the case names its own; storm %s. "+
		"Ideal = jobs ÷ limit × window + one median generation (+ the storm).\n",
		strings.Join(scales, "; "), o.Jobs, o.Storm)
	_, err := io.WriteString(w, b.String())
	return err
}

func row(b *strings.Builder, r Result, f Figures, target string) {
	late := fmt.Sprint(f.LateRateLimited)
	if r.Case.Storm {
		late += " (outside the storm)"
	}
	behind := "–"
	if f.FocusJobs > 0 {
		behind = fmt.Sprintf("%s (%d of %d)", dur(f.FocusDone), f.FocusArchived, f.FocusJobs)
	}
	elapsed := dur(f.Elapsed)
	if f.TimedOut {
		elapsed = "unfinished after " + elapsed
	}
	fmt.Fprintf(b, "| %s | %s | %s | %d | %s (%s) | %s | %s (%s) | %d (%s) | %s | %s / %s | %s | %s | %d / %d | %d | %s |\n",
		r.Case.Title, r.Scale.Name, f.Client, f.Jobs, elapsed, dur(f.Ideal), num(f.VsIdeal(), 2)+"×",
		pct(f.SpanUtilisation), pct(f.Utilisation), f.RateLimited, num(f.Per100(), 1), late,
		dur(f.LatencyP50), dur(f.LatencyP95), num(f.PollsPerJob(), 2), behind, f.Archived, f.Failed, f.PaidTwice, target)
}

// dur rounds a duration for the report.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < 10*time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

// line is one target's row in the summary.
type line struct{ figure, kontextq, target, naive, ratio string }

// summary lists the figures the case's targets are about.
func summary(r Result) []line {
	t, k, s := r.Case.Target, r.Kontextq, r.Scale
	var out []line
	add := func(figure, target string, show func(Figures) string, value func(Figures) float64) {
		l := line{figure: figure, kontextq: show(k), target: target, naive: "–", ratio: "–"}
		if r.Naive != nil {
			l.naive = show(*r.Naive)
			if value != nil {
				l.ratio = num(value(k)/value(*r.Naive), 2)
			}
		}
		out = append(out, l)
	}
	if t.MinSpanUtilisation > 0 {
		add(figSpan, "≥ "+pct(t.MinSpanUtilisation),
			func(f Figures) string { return pct(f.SpanUtilisation) }, func(f Figures) float64 { return f.SpanUtilisation })
	}
	if t.MinUtilisation > 0 {
		add(figUtil, "≥ "+pct(t.MinUtilisation),
			func(f Figures) string { return pct(f.Utilisation) }, func(f Figures) float64 { return f.Utilisation })
	}
	wall := func(f Figures) string {
		return fmt.Sprintf("%s (%s× ideal %s)", dur(f.Elapsed), num(f.VsIdeal(), 2), dur(f.Ideal))
	}
	if t.MaxVsIdeal > 0 {
		add(figWall, fmt.Sprintf("≤ %g× ideal", t.MaxVsIdeal), wall, func(f Figures) float64 { return f.Elapsed.Seconds() })
	}
	if lim, ok := t.wallLimit(k.Ideal, s); ok {
		add(figWall, fmt.Sprintf("≤ %s (ideal + %s + %g window)", dur(lim), t.OverIdeal, t.OverIdealWindows), wall,
			func(f Figures) float64 { return f.Elapsed.Seconds() })
	}
	if t.Check429 {
		add(figPer100, fmt.Sprintf("≤ %g", t.MaxPer100), func(f Figures) string { return num(f.Per100(), 1) }, nil)
	}
	if t.CheckTotal429 {
		add(figAll429, fmt.Sprintf("≤ %d", t.MaxRateLimited), func(f Figures) string { return fmt.Sprint(f.RateLimited) }, nil)
	}
	if lim, ok := t.focusLimit(s); ok {
		add(figFocus, fmt.Sprintf("≤ %s (%g window + %g× median generation)", dur(lim), t.FocusWindows, t.FocusMedians),
			func(f Figures) string {
				return fmt.Sprintf("%s (%d of %d)", dur(f.FocusDone), f.FocusArchived, f.FocusJobs)
			},
			func(f Figures) float64 { return f.FocusDone.Seconds() })
	}
	if t.Latency && s.LatencyP95 > 0 {
		add(figLatencyP95, "≤ "+dur(s.LatencyP95), func(f Figures) string { return dur(f.LatencyP95) },
			func(f Figures) float64 { return f.LatencyP95.Seconds() })
	}
	if t.Latency && t.MaxPollsPerJob > 0 {
		add(figPolls, fmt.Sprintf("≤ %g", t.MaxPollsPerJob), func(f Figures) string { return num(f.PollsPerJob(), 2) },
			func(f Figures) float64 { return f.PollsPerJob() })
	}
	if t.NoLate429 {
		add(figLate429, "0", func(f Figures) string { return fmt.Sprint(f.LateRateLimited) }, nil)
	}
	ended := func(f Figures) string {
		s := fmt.Sprintf("%d / %d", f.Archived, f.Failed)
		if f.TimedOut {
			s += fmt.Sprintf(", %d unfinished", f.Jobs-f.Archived-f.Failed)
		}
		return s
	}
	if t.NoFailure {
		add(figEnded, "all archived", ended, nil)
	} else {
		add(figEnded, "every job ended", ended, nil)
	}
	if r.Case.ResultTTL > 0 || k.PaidTwice > 0 {
		add(figPaidTwice, "0", func(f Figures) string { return fmt.Sprint(f.PaidTwice) }, nil)
	}
	for i := range out {
		out[i].kontextq = mark(out[i].kontextq, r, out[i].figure)
	}
	return out
}

// mark puts in bold a figure whose target was missed.
func mark(v string, r Result, figure string) string {
	for _, m := range r.misses() {
		if m.figure == figure {
			return "**" + v + "** (missed)"
		}
	}
	return v
}

// verdict says whether kontextq met the case's targets, and which it missed.
func verdict(r Result) string {
	m := r.Misses()
	if len(m) == 0 {
		return "met"
	}
	return "**missed**: " + strings.Join(m, "; ")
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
