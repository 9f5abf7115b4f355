package ratelimit

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// admit drives a local x/time/rate bucket with an attempt every step for d and returns the
// grant times: the densest demand there is, which is what exposes a bucket's worst window.
func admit(lim rate.Limit, burst int, step, d time.Duration) []time.Time {
	start := time.Unix(1_760_000_000, 0)
	l := rate.NewLimiter(lim, burst)
	var got []time.Time
	for t := start; t.Sub(start) < d; t = t.Add(step) {
		if l.AllowN(t, 1) {
			got = append(got, t)
		}
	}
	return got
}

func TestBucketShapeAgainstStrictWindow(t *testing.T) {
	kie := Rate{20, 10 * time.Second}
	shaped, burst := Shape(kie, DefaultMargin)
	tests := []struct {
		name      string
		lim       rate.Limit
		burst     int
		wantFits  bool    // never more than 20 in a closed 10 s window
		wantUtil  float64 // long-run share of 20/10s, at least
		wantWorst int     // worst window, when the shape does not fit
	}{
		// The obvious configuration: a full bucket plus a window's refill (39 in a half-open
		// window, 40 in a closed one).
		{"rate 20/10s, burst 20", rate.Limit(2), 20, false, 0.99, 40},
		// Burst 1 at exactly the rate: 21 in a closed window (the 1st and 21st grant are
		// exactly 10 s apart), so any arrival jitter at Kie means a 429.
		{"rate 20/10s, burst 1", rate.Limit(2), 1, false, 0.99, 21},
		// A burst of 2 fits only when paid for with a slower rate: 10% of the throughput.
		{"rate 18/10s, burst 2", rate.Limit(1.8), 2, true, 0.89, 0},
		{"Shape(20/10s, 2%)", shaped, burst, true, 0.97, 0},
		{"Shape(20/10s, 5%)", shapeLimit(kie, 0.05), 1, true, 0.94, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := 5 * time.Minute
			got := admit(tc.lim, tc.burst, 5*time.Millisecond, d)
			worst := maxInWindow(got, kie.Per)
			util := float64(len(got)) / (d.Seconds() * kie.PerSecond())
			t.Logf("worst 10 s window %d, utilisation %.1f%%", worst, 100*util)
			if fits := worst <= kie.Events; fits != tc.wantFits {
				t.Fatalf("worst window holds %d grants; fits in %s = %v, want %v", worst, kie, fits, tc.wantFits)
			}
			if !tc.wantFits && worst != tc.wantWorst {
				t.Errorf("worst window holds %d grants, want %d", worst, tc.wantWorst)
			}
			if util < tc.wantUtil {
				t.Errorf("utilisation %.3f, want at least %.3f", util, tc.wantUtil)
			}
		})
	}
}

// shapeLimit is Shape's limit alone, for table rows.
func shapeLimit(r Rate, margin float64) rate.Limit {
	l, _ := Shape(r, margin)
	return l
}

func TestShapeMarginCost(t *testing.T) {
	kie := Rate{20, 10 * time.Second}
	for _, margin := range []float64{0.01, 0.02, 0.05, 0.10} {
		lim, burst := Shape(kie, margin)
		if burst != 1 {
			t.Fatalf("Shape burst = %d, want 1", burst)
		}
		want := 1 / (1 + margin)
		if got := float64(lim) / kie.PerSecond(); got < want-1e-9 || got > want+1e-9 {
			t.Errorf("margin %.2f: rate is %.4f of Kie's, want %.4f", margin, got, want)
		}
	}
}
