package worker

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

func TestPollPlan(t *testing.T) {
	const s = time.Second
	plan := pollPlan{prior: 8 * s, maxInterval: 3 * s, rate: 10}
	learned2s := Estimate{Median: 2 * s, Sigma: 0.5, Samples: 20}
	learned8s := Estimate{Median: 8 * s, Sigma: 0.5, Samples: 20}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name     string
		est      Estimate
		elapsed  time.Duration // <0: the first poll
		phase    float64
		inFlight int64
		lo, hi   time.Duration
	}{
		{"nothing learned: the first poll scouts at an eighth of --first-poll", Estimate{}, -1, 0, 1, s, s},
		{"nothing learned: the phase moves the scout by a quarter of it", Estimate{}, -1, 0.5, 1, ms(1250), ms(1250)},
		{"nothing learned: scouting waits half the elapsed time", Estimate{}, 3 * s, 0, 1, ms(1500), ms(1500)},
		{"nothing learned: scouting waits at least the first scout", Estimate{}, ms(1200), 0, 1, s, s},
		{"learned 2 s: first poll at m·e^(−0.3), before the median", learned2s, -1, 0, 1, ms(1481), ms(1482)},
		{"learned 8 s: same shape", learned8s, -1, 0, 1, ms(5926), ms(5927)},
		{"the phase moves the first poll by up to half a steady wait", learned8s, -1, -0.5, 1, ms(4726), ms(4727)},
		{"many in flight: the first poll still near the median", learned2s, -1, 0, 40, ms(1481), ms(1482)},
		{"2 s, within the usual times: every 0.6·σ·m", learned2s, ms(1500), 0, 1, ms(600), ms(600)},
		{"8 s, within the usual times: same shape", learned8s, 10 * s, 0, 1, ms(2400), ms(2400)},
		{"a straggler: σ/2 of its elapsed time", learned2s, 8 * s, 0, 1, 2 * s, 2 * s},
		{"never longer than --poll-interval", Estimate{Median: 2 * s, Sigma: 1, Samples: 20}, 60 * s, 0, 1, 3 * s, 3 * s},
		{"many in flight: a job's share of the budget", learned2s, ms(1900), 0, 40, 5 * s, 5 * s},
		{"tiny sigma: never sooner than a tenth of the median", Estimate{Median: 2 * s, Sigma: 0, Samples: 20}, ms(1500), 0, 1, ms(200), ms(200)},
		{"few samples: σ drawn towards the prior", Estimate{Median: 2 * s, Sigma: 0, Samples: 2}, ms(1500), 0, 1, ms(424), ms(425)},
	}
	for _, c := range cases {
		var d time.Duration
		if c.elapsed < 0 {
			d = plan.first(c.est, c.inFlight, c.phase)
		} else {
			d = plan.next(c.est, c.elapsed, c.inFlight)
		}
		if d < c.lo || d > c.hi {
			t.Errorf("%s: %v, want within [%v, %v]", c.name, d, c.lo, c.hi)
		}
	}
}

// Over many jobs with lognormal generation times (σ = 0.5), the schedule polls each about three
// times and sees 95% of results within a third of the median of their completion.
func TestPollPlanCostAndLatency(t *testing.T) {
	const n = 4000
	m := 8 * time.Second
	plan := pollPlan{prior: m, maxInterval: time.Hour}
	e := Estimate{Median: m, Sigma: 0.5, Samples: 100}
	rng := rand.New(rand.NewPCG(1, 2))
	polls := 0
	lats := make([]float64, 0, n)
	for i := range n {
		gen := time.Duration(float64(m) * math.Exp(0.5*rng.NormFloat64()))
		at := plan.first(e, 1, float64(i)/n-0.5)
		for {
			polls++
			if at >= gen {
				lats = append(lats, float64(at-gen)/float64(m))
				break
			}
			at += plan.next(e, at, 1)
		}
	}
	sort.Float64s(lats)
	perJob, p95 := float64(polls)/n, lats[n*95/100]
	t.Logf("%.2f polls per job, p95 %.3f medians", perJob, p95)
	if perJob > 3 || p95 > 0.34 {
		t.Errorf("%.2f polls per job and p95 %.3f medians from completion to seen; want at most 3 and 0.34", perJob, p95)
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
				d = plan.first(e, 1, 0.3)
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
	if d := plan.first(e, 1, 0); d > 2*time.Second || d < 1300*time.Millisecond {
		t.Errorf("first poll %v after three ~2 s generations (prior 8 s)", d)
	}
	if e, _ := g.read(ctx, edit); e.Samples != 0 {
		t.Errorf("edits learned from generations: %+v", e)
	}
}
