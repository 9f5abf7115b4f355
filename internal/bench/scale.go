package bench

import (
	"fmt"
	"strings"
	"time"
)

// Scale is the time scale of a run: the simulated account's true generate limit, the
// simulator's generation times, and every other duration of Kie's (the record-info budget, the
// naive client's sleeps, result lifetimes) compressed by Window ÷ Kie's 10 s.
type Scale struct {
	// Name is how the command line and the report call it.
	Name string
	// Limit generate calls per Window is the account's true, strict limit.
	Limit  int
	Window time.Duration
	// GenMedian is the median of the simulator's lognormal generation time (σ 0.5).
	GenMedian time.Duration
	// LatencyP95 is the target for the 95th percentile of completion → archived at this scale
	// (0: not checked).
	LatencyP95 time.Duration
}

// Compressed is Kie's limit compressed five times in time, 20 calls per 2 s, with generations of
// 2 s (median): minutes of Kie in seconds.
func Compressed() Scale {
	return Scale{Name: "compressed", Limit: 20, Window: 2 * time.Second, GenMedian: 2 * time.Second, LatencyP95: time.Second}
}

// Kie is Kie's own scale: 20 calls per 10 s, generations of 8 s (median).
func Kie() Scale {
	return Scale{Name: "kie", Limit: 20, Window: kieWindow, GenMedian: 8 * time.Second, LatencyP95: 3 * time.Second}
}

// Scales are the named scales, in the order "both" runs them.
func Scales() []Scale { return []Scale{Compressed(), Kie()} }

// ParseScales reads "compressed", "kie" or "both" (several may be given, comma-separated).
func ParseScales(s string) ([]Scale, error) {
	var out []Scale
	for n := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(n) {
		case "compressed":
			out = append(out, Compressed())
		case "kie":
			out = append(out, Kie())
		case "both":
			out = append(out, Scales()...)
		default:
			return nil, fmt.Errorf("unknown scale %q: want compressed (20/2s, 2s generations), kie (20/10s, 8s) or both", strings.TrimSpace(n))
		}
	}
	return out, nil
}

// compress scales one of Kie's real durations to this scale.
func (s Scale) compress(d time.Duration) time.Duration {
	return time.Duration(float64(d) * float64(s.Window) / float64(kieWindow))
}

// String is the scale as the report shows it.
func (s Scale) String() string {
	return fmt.Sprintf("%s (%d/%s, %s generations)", s.Name, s.Limit, s.Window, s.GenMedian)
}
