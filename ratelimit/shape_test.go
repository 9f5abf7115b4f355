package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// issueUtilisation is the share of the limit a run of grants used: grants ÷ (events × (span
// from the first to the last grant + one window) ÷ window). A client that wastes the first
// window, or any other, scores less; a run of full windows, each sent at once, scores 1.
func issueUtilisation(grants []time.Time, r Rate) float64 {
	if len(grants) == 0 {
		return 0
	}
	first, last := grants[0], grants[0]
	for _, g := range grants {
		if g.Before(first) {
			first = g
		}
		if g.After(last) {
			last = g
		}
	}
	windows := (last.Sub(first) + r.Per).Seconds() / r.Per.Seconds()
	return float64(len(grants)) / (float64(r.Events) * windows)
}

// Against every demand, at Kie's real scale and compressed, one process or several: the account
// gets its whole window at once when idle, no call reaches a strict window over the limit even
// when each arrives up to the margin late, and constant demand uses the limit less the margin.
func TestStrictWindowUnderHostileDemand(t *testing.T) {
	rates := []struct {
		name   string
		rate   Rate
		margin float64
	}{
		{"Kie 20/10s", Rate{20, 10 * time.Second}, 0},
		{"compressed 20/2s", Rate{20, 2 * time.Second}, 0},
		{"20/2s, 5% margin", Rate{20, 2 * time.Second}, 0.05},
		{"1/1m", Rate{1, time.Minute}, 0},
		{"100/1s", Rate{100, time.Second}, 0},
	}
	for _, rc := range rates {
		for _, p := range adversarial {
			for _, processes := range []int{1, 3} {
				t.Run(fmt.Sprintf("%s/%s/%d processes", rc.name, p.name, processes), func(t *testing.T) {
					ctx := context.Background()
					b := setup(t)
					ls := make([]*Limiter, processes)
					for i := range ls {
						ls[i] = b.limiter(Options{Rate: rc.rate, Margin: rc.margin})
					}
					margin := rc.margin
					if margin == 0 {
						margin = DefaultMargin
					}
					span := time.Duration(float64(rc.rate.Per) * (1 + margin))

					// Idle: the whole window at once, from any process, then nothing until the
					// first grant is a span old.
					for i := range rc.rate.Events {
						if res, err := allow(ctx, ls[i%processes]); err != nil || !res.Allowed {
							t.Fatalf("grant %d of %d on an idle account: %+v, %v", i+1, rc.rate.Events, res, err)
						}
					}
					res, err := allow(ctx, ls[len(ls)-1])
					if err != nil || res.Allowed {
						t.Fatalf("grant %d at the same instant: %+v, %v; want denied", rc.rate.Events+1, res, err)
					}
					if d := res.RetryAfter - span; d < 0 || d > time.Millisecond {
						t.Errorf("told to retry after %v, want the window and its margin, %v", res.RetryAfter, span)
					}

					var before int64
					for _, l := range ls {
						before += l.Stats().RoundTrips
					}
					d := 30 * rc.rate.Per
					grants := drive(t, b.clock, ls, p, d, 7)
					// Each call reaches Kie up to the margin after its grant.
					r := rand.New(rand.NewPCG(3, uint64(processes)))
					arrivals := make([]time.Time, len(grants))
					for i, g := range grants {
						arrivals[i] = g.Add(time.Duration(r.Int64N(int64(span-rc.rate.Per) + 1)))
					}
					worst := maxInWindow(arrivals, rc.rate.Per)
					util := issueUtilisation(grants, rc.rate)
					trips := -before
					for _, l := range ls {
						trips += l.Stats().RoundTrips
					}
					t.Logf("%d grants, worst window at Kie %d, utilisation %.1f%%, %.2f round trips per grant",
						len(grants), worst, 100*util, float64(trips)/float64(len(grants)))
					if worst > rc.rate.Events {
						t.Fatalf("Kie saw %d calls in a %v window, it allows %d", worst, rc.rate.Per, rc.rate.Events)
					}
					if w := maxInWindow(grants, span); w > rc.rate.Events {
						t.Fatalf("a closed window of %v holds %d grants, want at most %d", span, w, rc.rate.Events)
					}
					// Polling every 7 ms asks for fewer tokens than 100/1s allows.
					constant := p.name == "obey RetryAfter exactly" ||
						p.name == "poll every 7ms" && rc.rate.Per/time.Duration(rc.rate.Events) > 70*time.Millisecond
					if want := 1/(1+margin) - 0.01; constant && util < want {
						t.Errorf("utilisation %.3f under constant demand, want at least %.3f", util, want)
					}
					if processes == 1 && float64(trips) > 1.02*float64(len(grants))+2 {
						t.Errorf("%d round trips for %d grants: local pacing should leave about one per grant", trips, len(grants))
					}
				})
			}
		}
	}
}
