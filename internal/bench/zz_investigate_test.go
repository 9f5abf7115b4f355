package bench

import (
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
	for _, c := range cs {
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
