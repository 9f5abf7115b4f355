package bench

import (
	"sync"
	"github.com/kontextq/kontextq/worker"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

func TestInvestigate(t *testing.T) {
	if os.Getenv("BENCH_INVESTIGATE") == "" {
		t.Skip()
	}
	env := redistest.New(t)
	o := Options{Redis: env.Client, Namespace: env.Prefix + "inv", Jobs: 300,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	o.defaults()
	cs, _ := SelectCases(os.Getenv("BENCH_INVESTIGATE"))
	var gmu sync.Mutex
	var grants []time.Time
	wrapLimiter = func(l worker.Limiter) worker.Limiter { return &recLim{Limiter: l, mu: &gmu, grants: &grants} }
	for _, c := range cs {
		gmu.Lock()
		grants = nil
		gmu.Unlock()
		debugHook = func(s *simServer) {
			s.mu.Lock()
			ans := slices.Clone(s.answers)
			s.mu.Unlock()
			slices.SortFunc(ans, func(a, b answer) int { return a.at.Compare(b.at) })
			var acc []time.Time
			for _, a := range ans {
				if a.code == 200 {
					acc = append(acc, a.at)
				}
			}
			// spacing of consecutive arrivals
			var gaps []time.Duration
			for i := 1; i < len(ans); i++ {
				gaps = append(gaps, ans[i].at.Sub(ans[i-1].at))
			}
			slices.Sort(gaps)
			fmt.Printf("case %s: %d answers; gap p1 %v p50 %v p99 %v max %v\n", c.Name, len(ans), gaps[len(gaps)/100], gaps[len(gaps)/2], gaps[len(gaps)*99/100], gaps[len(gaps)-1])
			var spans []time.Duration
			for i := 20; i < len(ans); i++ {
				spans = append(spans, ans[i].at.Sub(ans[i-20].at))
			}
			slices.Sort(spans)
			fmt.Printf("  21-call spans: min %v p1 %v p50 %v\n", spans[0], spans[len(spans)/100], spans[len(spans)/2])
			t0 := ans[0].at
			gmu.Lock()
			gs := slices.Clone(grants)
			gmu.Unlock()
			slices.SortFunc(gs, func(a, b time.Time) int { return a.Compare(b) })
			var lates []time.Duration
			for i := range min(len(gs), len(ans)) {
				lates = append(lates, ans[i].at.Sub(gs[i]))
			}
			sl := slices.Clone(lates)
			slices.Sort(sl)
			fmt.Printf("  grant->arrival: p50 %v p99 %v max %v\n", sl[len(sl)/2], sl[len(sl)*99/100], sl[len(sl)-1])
			for i, a := range ans {
				if i < len(gs) && (lates[i] > 30*time.Millisecond) {
					fmt.Printf("  late arrival %d at %v: grant at %v, late %v\n", i, a.at.Sub(t0).Round(time.Millisecond), gs[i].Sub(t0).Round(time.Millisecond), lates[i].Round(time.Millisecond))
				}
			}
			for i, a := range ans {
				if a.code != 200 {
					fmt.Printf("  %d at %v:", a.code, a.at.Sub(t0).Round(time.Millisecond))
					for j := max(0, i-22); j < min(len(ans), i+3); j++ {
						fmt.Printf(" %v/%d", ans[j].at.Sub(t0).Round(time.Millisecond), ans[j].code)
					}
					fmt.Println()
				}
			}
		}
		f, err := runKontextq(context.Background(), o, c)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("  %+v\n", f)
	}
}

type recLim struct {
	worker.Limiter
	mu     *sync.Mutex
	grants *[]time.Time
}

func (r *recLim) WaitAtMost(ctx context.Context, max time.Duration) (bool, time.Duration, error) {
	ok, d, err := r.Limiter.WaitAtMost(ctx, max)
	if ok {
		r.mu.Lock()
		*r.grants = append(*r.grants, time.Now())
		r.mu.Unlock()
	}
	return ok, d, err
}
