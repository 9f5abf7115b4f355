package worker

import (
	"context"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

func TestPollPlan(t *testing.T) {
	const s = time.Second
	plan := pollPlan{prior: 8 * s, maxInterval: 3 * s, rate: 10}
	learned2s := Estimate{Median: 2 * s, Sigma: 0.1, Samples: 20}
	learned8s := Estimate{Median: 8 * s, Sigma: 0.1, Samples: 20}
	within := func(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }
	cases := []struct {
		name     string
		est      Estimate
		elapsed  time.Duration // <0: the first poll
		inFlight int64
		lo, hi   time.Duration
	}{
		{"prior: first poll a little before --first-poll", Estimate{}, -1, 1, 6 * s, 8 * s},
		{"learned 2 s: first poll just before 2 s", learned2s, -1, 1, 1800 * time.Millisecond, 2 * s},
		{"learned 8 s: first poll just before 8 s, same shape", learned8s, -1, 1, 7200 * time.Millisecond, 8 * s},
		{"2 s, just before the median: next poll a tenth of the median on", learned2s, 1900 * time.Millisecond, 1, 200 * time.Millisecond, 200 * time.Millisecond},
		{"8 s, just before the median: next poll a tenth of the median on", learned8s, 7600 * time.Millisecond, 1, 800 * time.Millisecond, 800 * time.Millisecond},
		{"early: halfway to the median", learned8s, 2 * s, 1, 3 * s, 3 * s},
		{"past the median: grows with the elapsed time", Estimate{Median: 2 * s, Sigma: 0.6, Samples: 20}, 8 * s, 1, 2400 * time.Millisecond, 2400 * time.Millisecond},
		{"never longer than --poll-interval", Estimate{Median: 2 * s, Sigma: 1, Samples: 20}, 60 * s, 1, 3 * s, 3 * s},
		{"many in flight: a job's share of the budget", learned2s, 1900 * time.Millisecond, 40, 5 * s, 5 * s},
		{"many in flight: the first poll still near the median", learned2s, -1, 40, 1800 * time.Millisecond, 2 * s},
		{"tiny sigma still spreads polls", Estimate{Median: 2 * s, Sigma: 0, Samples: 5}, 2 * s, 1, 200 * time.Millisecond, 200 * time.Millisecond},
	}
	for _, c := range cases {
		var d time.Duration
		if c.elapsed < 0 {
			d = plan.first(c.est, c.inFlight)
		} else {
			d = plan.next(c.est, c.elapsed, c.inFlight)
		}
		if !within(d, c.lo, c.hi) {
			t.Errorf("%s: %v, want within [%v, %v]", c.name, d, c.lo, c.hi)
		}
	}
}

// The schedule has no time scale of its own: scaling the estimate and the elapsed time scales
// every delay by the same factor.
func TestPollPlanScaleFree(t *testing.T) {
	for _, elapsed := range []float64{-1, 0.2, 0.9, 1, 1.5, 4} {
		var ds []float64
		for _, scale := range []time.Duration{100 * time.Millisecond, time.Second, 10 * time.Second} {
			plan := pollPlan{prior: scale, maxInterval: 1000 * scale}
			e := Estimate{Median: scale, Sigma: 0.3, Samples: 9}
			var d time.Duration
			if elapsed < 0 {
				d = plan.first(e, 1)
			} else {
				d = plan.next(e, time.Duration(elapsed*float64(scale)), 1)
			}
			ds = append(ds, float64(d)/float64(scale))
		}
		for _, r := range ds[1:] {
			if r < ds[0]*0.999 || r > ds[0]*1.001 {
				t.Errorf("elapsed %v medians: delays in medians %v differ with the scale", elapsed, ds)
			}
		}
	}
}

// Learned times are shared through Redis per model and mode, and the schedule follows them
// within a few jobs, whatever the prior.
func TestGenStatsLearn(t *testing.T) {
	env := redistest.New(t)
	ctx := context.Background()
	g := &genStats{rdb: env.Client, key: func(n string) string { return env.Prefix + ":" + n }, ttl: time.Hour}
	gen, edit := &jobs.Spec{Prompt: "p"}, &jobs.Spec{Prompt: "p", InputImage: "https://x/y.png"}
	for _, d := range []time.Duration{2 * time.Second, 1900 * time.Millisecond, 2100 * time.Millisecond} {
		if err := g.observe(ctx, gen, d); err != nil {
			t.Fatal(err)
		}
	}
	e, err := g.read(ctx, gen)
	if err != nil {
		t.Fatal(err)
	}
	if e.Samples != 3 || e.Median < 1900*time.Millisecond || e.Median > 2100*time.Millisecond {
		t.Fatalf("after three ~2 s generations: %+v", e)
	}
	plan := pollPlan{prior: 8 * time.Second, maxInterval: 3 * time.Second}
	if d := plan.first(e, 1); d > 2*time.Second || d < 1500*time.Millisecond {
		t.Errorf("first poll %v after three ~2 s generations (prior 8 s)", d)
	}
	if e, _ := g.read(ctx, edit); e.Samples != 0 {
		t.Errorf("edits learned from generations: %+v", e)
	}
}
