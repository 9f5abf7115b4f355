package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Markdown writes the results as a markdown table, kontextq and the naive client side by side
// for each case, followed by the settings that produced them.
func Markdown(w io.Writer, o Options, rs []Result) error {
	_ = o.defaults()
	var b strings.Builder
	b.WriteString("| case | client | jobs | utilisation of the true limit | utilisation over the span | 429s (per 100 accepted) | 429s after the first 3 windows | time (ideal) | time vs ideal | archived / failed | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		row(&b, r.Case, r.Kontextq, verdict(r))
		if r.Naive != nil {
			row(&b, r.Case, *r.Naive, "")
		}
	}
	fmt.Fprintf(&b, "\nTrue limit %d per %s (Kie's 20 per 10 s compressed %.0f×); %d jobs per case unless the case names its own; median generation %s; "+
		"submit workers %d per process; poll %s; naive client %d goroutines per process, sleeping %s on a 429 and polling every %s; storm %s.\n",
		o.Limit, o.Window, float64(kieWindow)/float64(o.Window), o.Jobs, o.GenTime, o.SubmitWorkers, o.PollInterval,
		o.NaiveConcurrency, o.compress(naiveSleepOn429), o.compress(naivePollEvery), o.Storm)
	_, err := io.WriteString(w, b.String())
	return err
}

func row(b *strings.Builder, c Case, f Figures, target string) {
	late := fmt.Sprint(f.LateRateLimited)
	if c.Storm {
		late += " (outside the storm)"
	}
	fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %d (%s) | %s | %s (%s) | %s | %d / %d | %s |\n",
		c.Title, f.Client, f.Jobs, pct(f.Utilisation), pct(f.SpanUtilisation), f.RateLimited, num(f.Per100(), 1), late,
		f.Elapsed.Round(100*time.Millisecond), f.Ideal.Round(100*time.Millisecond), num(f.VsIdeal(), 2)+"×",
		f.Archived, f.Failed, target)
}

// verdict says whether kontextq met the case's target, and which part it missed.
func verdict(r Result) string {
	m := r.Misses()
	if len(m) == 0 {
		return "met: " + describe(r.Case.Target)
	}
	return "**missed**: " + strings.Join(m, "; ")
}

func describe(t Target) string {
	var parts []string
	if t.MinUtilisation > 0 {
		parts = append(parts, fmt.Sprintf("≥ %s", pct(t.MinUtilisation)))
	}
	if t.MinSpanUtilisation > 0 {
		parts = append(parts, fmt.Sprintf("≥ %s over the span", pct(t.MinSpanUtilisation)))
	}
	if t.Check429 {
		parts = append(parts, fmt.Sprintf("≤ %g 429s/100", t.MaxPer100))
	}
	if t.CheckTotal429 {
		parts = append(parts, fmt.Sprintf("≤ %d 429s in all", t.MaxRateLimited))
	}
	if t.NoLate429 {
		parts = append(parts, fmt.Sprintf("none after %d windows", WarmupWindows))
	}
	if t.NoFailure {
		parts = append(parts, "no job fails")
	}
	return strings.Join(parts, ", ")
}

func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
