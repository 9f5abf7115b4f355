package bench

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns t0 plus each offset in milliseconds.
func at(ms ...int) []time.Time {
	out := make([]time.Time, len(ms))
	for i, m := range ms {
		out[i] = t0.Add(time.Duration(m) * time.Millisecond)
	}
	return out
}

// evenly returns n calls spaced every step from t0.
func evenly(n int, step time.Duration) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = t0.Add(time.Duration(i) * step)
	}
	return out
}

func TestUtilisation(t *testing.T) {
	const limit = 4
	w := time.Second
	tests := []struct {
		name     string
		accepted []time.Time
		skip     interval
		want     float64
		windows  int
	}{
		{"bursts at the limit use all of it", at(0, 1, 2, 3, 1000, 1001, 1002, 1003, 2000, 2001, 2002, 2003, 3000), interval{}, 1, 3},
		{"evenly at the limit", evenly(13, 250*time.Millisecond), interval{}, 1, 3},
		{"evenly at half the limit", evenly(7, 500*time.Millisecond), interval{}, 0.5, 3},
		{"order does not matter", at(3000, 2003, 0, 1000, 2000, 1, 1001, 2001, 2, 1002, 2002, 3, 1003), interval{}, 1, 3},
		{"the partial last window is left out", at(0, 1, 2, 3, 1000, 1999), interval{}, 1, 1},
		{"shorter than a window", at(0, 100, 900), interval{}, math.NaN(), 0},
		{"an idle window counts", at(0, 1, 2, 3, 2000, 2001, 2002, 2003, 3000), interval{}, 8.0 / 12, 3},
		{"a window overlapping the storm is skipped", at(0, 1, 2, 3, 2000, 2001, 2002, 2003, 3000),
			interval{t0.Add(1100 * time.Millisecond), t0.Add(1900 * time.Millisecond)}, 1, 2},
		{"a storm over everything leaves nothing", at(0, 1, 2000), interval{t0, t0.Add(time.Hour)}, math.NaN(), 0},
		{"nothing accepted", nil, interval{}, math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n := utilisation(tt.accepted, limit, w, tt.skip)
			if n != tt.windows || !(got == tt.want || math.IsNaN(got) && math.IsNaN(tt.want) || math.Abs(got-tt.want) < 1e-9) {
				t.Errorf("utilisation = %v over %d windows, want %v over %d", got, n, tt.want, tt.windows)
			}
		})
	}
}

func TestSpanUtilisation(t *testing.T) {
	const limit = 4
	w := time.Second
	tests := []struct {
		name     string
		accepted []time.Time
		storm    interval
		want     float64
	}{
		{"each window sent at once as it frees", at(0, 1, 2, 3, 1004, 1005, 1006, 1007), interval{}, 8 / (4 * 2.007)},
		{"one window sent at once", at(0, 0, 0, 0), interval{}, 1},
		{"spaced evenly at the limit wastes a window", evenly(8, 250*time.Millisecond), interval{}, 8 / (4 * 2.75)},
		{"an idle window counts", at(0, 1, 2, 3, 2000, 2001, 2002, 2003), interval{}, 8 / (4 * 3.003)},
		{"the storm is left out of the span", at(0, 1, 2, 3, 5000, 5001, 5002, 5003),
			interval{t0.Add(1000 * time.Millisecond), t0.Add(4000 * time.Millisecond)}, 8 / (4 * 3.003)},
		{"nothing accepted", nil, interval{}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := spanUtilisation(tt.accepted, limit, w, tt.storm)
			if !(math.IsNaN(got) && math.IsNaN(tt.want) || math.Abs(got-tt.want) < 1e-9) {
				t.Errorf("spanUtilisation = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLateRateLimited(t *testing.T) {
	w := time.Second
	ans := func(ms, code int) answer { return answer{at: t0.Add(time.Duration(ms) * time.Millisecond), code: code} }
	tests := []struct {
		name    string
		answers []answer
		skip    interval
		want    int
	}{
		{"429s in the first three windows are warm-up", []answer{ans(0, 200), ans(500, 429), ans(2999, 429), ans(3500, 200)}, interval{}, 0},
		{"429s from the fourth window on are late", []answer{ans(0, 200), ans(3000, 429), ans(9000, 429), ans(9001, 200)}, interval{}, 2},
		{"counted from the first call, whatever the order", []answer{ans(3500, 429), ans(1000, 200)}, interval{}, 0},
		{"429s during the storm are not late", []answer{ans(0, 200), ans(5000, 429), ans(6000, 429), ans(8000, 429)},
			interval{t0.Add(4 * time.Second), t0.Add(7 * time.Second)}, 1},
		{"no answers", nil, interval{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lateRateLimited(tt.answers, w, tt.skip); got != tt.want {
				t.Errorf("lateRateLimited = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestMisses(t *testing.T) {
	byName := map[string]Case{}
	for _, c := range Cases() {
		byName[c.Name] = c
	}
	s := Compressed()
	good := Figures{Jobs: 300, Archived: 300, Accepted: 300, Utilisation: 0.98, SpanUtilisation: 0.98,
		Elapsed: 10 * time.Second, Ideal: 10 * time.Second, LatencyP95: 500 * time.Millisecond, RecordInfoCalls: 600}
	tests := []struct {
		name string
		c    string
		f    Figures
		want []string
	}{
		{"all met", "one", good, nil},
		{"utilisation low", "one", with(good, func(f *Figures) { f.Utilisation = 0.9 }), []string{"utilisation 90.0% < 97.0%"}},
		{"utilisation unmeasured", "one", with(good, func(f *Figures) { f.Utilisation = math.NaN() }), []string{"utilisation not measured: no whole window to measure (use more --jobs)"}},
		{"too many 429s", "one", with(good, func(f *Figures) { f.RateLimited = 6 }), []string{"2.0 429s per 100 accepted > 1"}},
		{"wasted first window", "idle60", with(good, func(f *Figures) { f.SpanUtilisation = 0.75 }), []string{"utilisation over the span 75.0% < 97.0%"}},
		{"slow", "idle60", with(good, func(f *Figures) { f.Elapsed = 14 * time.Second }), []string{"wall 14s = 1.40× ideal > 1.3×"}},
		{"late archives", "idle60", with(good, func(f *Figures) { f.LatencyP95 = 1500 * time.Millisecond }), []string{"completion → archived p95 1.5s > 1s"}},
		{"too many polls", "four200", with(good, func(f *Figures) { f.RecordInfoCalls = 1000 }), []string{"3.33 polls per job > 3"}},
		{"429s in all", "overtold", with(good, func(f *Figures) { f.RateLimited = 11 }), []string{"11 429s in all > 10"}},
		{"late 429s", "overtold", with(good, func(f *Figures) { f.RateLimited, f.LateRateLimited = 5, 1 }), []string{"1 429s after the first 3 windows"}},
		{"a failure", "storm", with(good, func(f *Figures) { f.Archived, f.Failed = 299, 1 }), []string{"299 of 300 jobs archived, 1 failed"}},
		{"the storm case has no rate target", "storm", with(good, func(f *Figures) { f.Utilisation, f.RateLimited = 0.2, 90 }), nil},
		{"failures are allowed with faults", "faults", with(good, func(f *Figures) { f.Archived, f.Failed = 290, 10 }), nil},
		{"unfinished", "faults", with(good, func(f *Figures) { f.Archived, f.TimedOut = 290, true }), []string{"unfinished after 10s: 290 of 300 archived, 0 failed"}},
		{"paid twice", "expire", with(good, func(f *Figures) { f.PaidTwice = 2 }), []string{"2 images paid twice"}},
		{"behind in time", "behind-file", with(good, func(f *Figures) { f.FocusJobs, f.FocusArchived, f.FocusDone = 5, 5, 5*time.Second }), nil},
		{"behind too late", "behind-api", with(good, func(f *Figures) { f.FocusJobs, f.FocusArchived, f.FocusDone = 1, 1, 30*time.Second }),
			[]string{"batch behind: 1 of 1 archived after 30s > 6s"}},
		{"maintenance in time", "maintenance", with(good, func(f *Figures) { f.Elapsed = 19 * time.Second }), nil},
		{"maintenance too long", "maintenance", with(good, func(f *Figures) { f.Elapsed = 20 * time.Second }), []string{"wall 20s > 19s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Result{Case: byName[tt.c], Scale: s, Kontextq: tt.f}.Misses()
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("Misses = %q, want %q", got, tt.want)
			}
		})
	}
}

func with(f Figures, change func(*Figures)) Figures {
	change(&f)
	return f
}

func TestSelectCases(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{RateLimitCases, "one,four,overtold,storm,idle60,four200", ""},
		{SchedulingCases, "idle60,four200,faults,overtold,expire,behind-file,behind-api,maintenance", ""},
		{"all", "one,four,overtold,storm,idle60,four200,faults,expire,behind-file,behind-api,maintenance", ""},
		{"storm, one", "storm,one", ""},
		{"one,five", "", `unknown case "five": want all or some of one, four, overtold, storm, idle60, four200, faults, expire, behind-file, behind-api, maintenance`},
	}
	for _, tt := range tests {
		cs, err := SelectCases(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("SelectCases(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		var names []string
		for _, c := range cs {
			names = append(names, c.Name)
		}
		if err != nil || strings.Join(names, ",") != tt.want {
			t.Errorf("SelectCases(%q) = %v, %v; want %s", tt.in, names, err, tt.want)
		}
	}
}

func TestParseScales(t *testing.T) {
	for in, want := range map[string]string{"compressed": "compressed", "kie": "kie", "both": "compressed,kie", "kie, compressed": "kie,compressed"} {
		ss, err := ParseScales(in)
		var names []string
		for _, s := range ss {
			names = append(names, s.Name)
		}
		if err != nil || strings.Join(names, ",") != want {
			t.Errorf("ParseScales(%q) = %v, %v; want %s", in, names, err, want)
		}
	}
	if _, err := ParseScales("fast"); err == nil || !strings.Contains(err.Error(), `unknown scale "fast"`) {
		t.Errorf("ParseScales(fast) error = %v", err)
	}
}

// tiny shrinks a case to a few jobs, so that every case runs in seconds.
func tiny(c Case) Case {
	if c.Jobs == 0 || c.Jobs > 12 {
		c.Jobs = 12
	}
	if c.Maintenance > 0 {
		c.Maintenance = 300 * time.Millisecond
	}
	return c
}

// TestRunSmoke runs a tiny version of every case, kontextq and the naive client, on real Redis at
// a tiny scale (4 calls per 500 ms), the cases side by side: every job must end, the simulator
// must never have been called over its limit, no image may be paid twice, the report must show
// both rows, and no key may be left. It asserts no timing: figures on a tiny batch on a shared
// machine mean little.
func TestRunSmoke(t *testing.T) {
	env := redistest.New(t)
	ctx := context.Background()
	o := Options{
		Redis: env.Client, Namespace: env.Prefix + "bench",
		// A limit below the batch: the storm starts once half the batch is accepted, which must
		// take more than one window's burst.
		Scale: Scale{Name: "tiny", Limit: 4, Window: 500 * time.Millisecond, GenMedian: 100 * time.Millisecond, LatencyP95: time.Second},
		Jobs:  12, Storm: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	t.Run("cases", func(t *testing.T) {
		for _, c := range Cases() {
			c := tiny(c)
			t.Run(c.Name, func(t *testing.T) {
				t.Parallel()
				results, err := Run(ctx, o, []Case{c})
				if err != nil {
					t.Fatal(err)
				}
				if len(results) != 1 {
					t.Fatalf("%d results, want 1", len(results))
				}
				checkSmoke(t, o, results[0])
			})
		}
	})
	if keys, err := env.Keys(ctx); err != nil || len(keys) > 0 {
		t.Errorf("keys left behind after the run (%v): %q", err, keys)
	}
}

func checkSmoke(t *testing.T, o Options, r Result) {
	t.Helper()
	for _, f := range []*Figures{&r.Kontextq, r.Naive} {
		if f == nil {
			t.Fatalf("no naive figures")
		}
		want := 12 + r.Case.Behind.Jobs
		if f.TimedOut || f.Jobs != want || f.Archived+f.Failed != want {
			t.Errorf("%s: %d archived and %d failed of %d (timed out: %t); want all %d ended",
				f.Client, f.Archived, f.Failed, f.Jobs, f.TimedOut, want)
		}
		if !r.Case.Faults.any() && r.Case.ResultTTL == 0 && f.Failed > 0 {
			t.Errorf("%s: %d failed without faults", f.Client, f.Failed)
		}
		if f.MaxInWindow > o.Scale.Limit {
			t.Errorf("%s: %d accepted in one window, over the limit of %d", f.Client, f.MaxInWindow, o.Scale.Limit)
		}
		if f.Latencies != f.Archived {
			t.Errorf("%s: %d latencies for %d archived", f.Client, f.Latencies, f.Archived)
		}
		if r.Case.Behind.Jobs > 0 && f.FocusJobs != r.Case.Behind.Jobs {
			t.Errorf("%s: batch behind of %d jobs, want %d", f.Client, f.FocusJobs, r.Case.Behind.Jobs)
		}
	}
	if r.Kontextq.PaidTwice > 0 {
		t.Errorf("kontextq paid %d images twice", r.Kontextq.PaidTwice)
	}
	if r.Case.Behind.Jobs > 0 && r.Kontextq.FocusArchived != r.Case.Behind.Jobs {
		t.Errorf("%d of the %d jobs behind archived", r.Kontextq.FocusArchived, r.Case.Behind.Jobs)
	}
	if r.Case.Storm && r.Kontextq.RateLimited == 0 {
		t.Errorf("kontextq saw no 429: the storm did not happen")
	}
	var md strings.Builder
	if err := Markdown(&md, o, []Result{r}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(md.String(), "| "+r.Case.Title+" |"); n != 2 {
		t.Errorf("report has %d rows for %q, want 2 (kontextq and naive):\n%s", n, r.Case.Title, md.String())
	}
	t.Logf("\n%s", md.String())
}

// BenchmarkRateLimit runs the idle60 case at the compressed scale, kontextq and the naive
// client, and reports kontextq's figures and its time as a ratio of the naive client's,
// measured in the same run:
//
//	go test -run '^$' -bench RateLimit -benchtime 1x ./internal/bench/
func BenchmarkRateLimit(b *testing.B) {
	env := redistest.New(b)
	o := Options{
		Redis: env.Client, Namespace: env.Prefix + "bench",
		Logger: slog.New(slog.NewTextHandler(testWriter{b}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	cases, err := SelectCases("idle60")
	if err != nil {
		b.Fatal(err)
	}
	var rs []Result
	for b.Loop() {
		if rs, err = Run(context.Background(), o, cases); err != nil {
			b.Fatal(err)
		}
	}
	k, n := rs[0].Kontextq, rs[0].Naive
	b.ReportMetric(100*k.SpanUtilisation, "span-util-%")
	b.ReportMetric(k.Per100(), "429s/100")
	b.ReportMetric(k.VsIdeal(), "x-ideal")
	b.ReportMetric(k.LatencyP95.Seconds(), "p95-archived-s")
	b.ReportMetric(k.PollsPerJob(), "polls/job")
	b.ReportMetric(100*n.SpanUtilisation, "naive-span-util-%")
	b.ReportMetric(k.Elapsed.Seconds()/n.Elapsed.Seconds(), "x-naive-time")
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
