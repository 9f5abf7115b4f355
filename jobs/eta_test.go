package jobs

import (
	"testing"
	"time"

	"github.com/kontextq/kontextq/ratelimit"
)

func TestEstimateETA(t *testing.T) {
	rate := ratelimit.Rate{Events: 20, Per: 10 * time.Second}
	cases := []struct {
		name   string
		c      Counts
		sh     Share
		rate   ratelimit.Rate
		submit time.Duration
		want   string
	}{
		{"nothing submitted", Counts{Total: 10, Queued: 10}, Share{}, rate, 5 * time.Second,
			"at least 5s: 10 queued at --rate 20/10s, then their generation"},
		{"working", Counts{Total: 100_000, Queued: 99_000, Submitted: 400, Archived: 600}, Share{}, rate, 49_500 * time.Second,
			"at least 13h 45m: 99000 queued at --rate 20/10s, then their generation"},
		{"other batches' turns first", Counts{Total: 5, Queued: 5}, Share{Waiting: 5, Turns: 10, Batches: 2, Fraction: 0.5}, ratelimit.Rate{Events: 10, Per: time.Second}, time.Second,
			"at least 1s: 10 submissions at --rate 10/1s (5 queued here, the rest other batches' turns), then their generation"},
		{"held jobs wait for the budget, not the rate", Counts{Total: 30, Queued: 30, Held: 10}, Share{}, rate, 10 * time.Second,
			"at least 10s: 20 queued at --rate 20/10s, then their generation"},
		{"last jobs at Kie", Counts{Total: 3, Submitted: 2, Generated: 1}, Share{}, rate, 0,
			"3 jobs at Kie or being archived; no more to submit"},
		{"the rest held", Counts{Total: 5, Queued: 4, Held: 4, Submitted: 1}, Share{}, rate, 0,
			"1 jobs at Kie or being archived; the rest are held by the budget"},
		{"no rate", Counts{Total: 5, Queued: 5}, Share{}, ratelimit.Rate{}, 0, "unknown (no --rate)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := EstimateETA(tc.c, tc.sh, tc.rate)
			if e.Submit != tc.submit {
				t.Errorf("submissions take %s, want %s", e.Submit, tc.submit)
			}
			if got := e.String(); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}
}
