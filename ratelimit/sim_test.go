package ratelimit

import (
	"cmp"
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// kieWindow is Kie's rate limit as KIE-API.md describes it: at most limit accepted calls in any
// closed window of length per, counted at arrival; over it the call is refused (429) and not
// counted. During a storm every call is refused.
type kieWindow struct {
	limit      int
	per        time.Duration
	accepted   []time.Time
	stormStart time.Time
	stormEnd   time.Time
}

func (k *kieWindow) call(at time.Time) bool {
	if !at.Before(k.stormStart) && at.Before(k.stormEnd) {
		return false
	}
	n := 0
	for i := len(k.accepted) - 1; i >= 0 && !k.accepted[i].Before(at.Add(-k.per)); i-- {
		n++
	}
	if n >= k.limit {
		return false
	}
	k.accepted = append(k.accepted, at)
	return true
}

type simCase struct {
	// per is Kie's window (10 s when zero); the latencies scale with it.
	per        time.Duration
	told       Rate
	trueLimit  int
	processes  int
	duration   time.Duration
	storm      [2]time.Duration // from, to (relative to the start); zero: none
	probeAfter time.Duration
}

type simResult struct {
	accepted []time.Time // arrival times at Kie
	refused  []time.Time
	limiters []*Limiter
}

// acceptedIn counts calls Kie accepted in [from, to) relative to start.
func (r simResult) acceptedIn(start time.Time, from, to time.Duration) int {
	n := 0
	for _, t := range r.accepted {
		if d := t.Sub(start); d >= from && d < to {
			n++
		}
	}
	return n
}

func (r simResult) refusedAfter(start time.Time, from time.Duration) int {
	n := 0
	for _, t := range r.refused {
		if t.Sub(start) >= from {
			n++
		}
	}
	return n
}

// simulate drives greedy workers (always wanting a token, back exactly at RetryAfter) of
// sc.processes processes against a strict Kie, with 100-200 ms up and 150-200 ms down latency
// (at Kie's 10 s window; compressed with it), on simulated time.
func simulate(t *testing.T, sc simCase) (simResult, time.Time) {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	start := b.clock.Now()
	if sc.per == 0 {
		sc.per = 10 * time.Second
	}
	scale := func(d time.Duration) time.Duration { return d * sc.per / (10 * time.Second) }
	kie := &kieWindow{limit: sc.trueLimit, per: sc.per,
		stormStart: start.Add(sc.storm[0]), stormEnd: start.Add(sc.storm[1])}
	r := rand.New(rand.NewPCG(42, uint64(sc.processes)))
	var res simResult
	next := make([]time.Time, sc.processes)
	for i := range sc.processes {
		res.limiters = append(res.limiters, b.limiter(Options{Rate: sc.told, ProbeAfter: sc.probeAfter}))
		next[i] = start
	}
	type reply struct {
		at   time.Time
		proc int
		ok   bool
	}
	var pending []reply
	end := start.Add(sc.duration)
	for {
		// The earliest event: a reply, else a worker's next attempt.
		pi, wi := -1, 0
		for i, p := range pending {
			if pi < 0 || p.at.Before(pending[pi].at) {
				pi = i
			}
		}
		for i := range next {
			if next[i].Before(next[wi]) {
				wi = i
			}
		}
		if pi >= 0 && !pending[pi].at.After(next[wi]) {
			p := pending[pi]
			pending = append(pending[:pi], pending[pi+1:]...)
			b.clock.Set(p.at)
			if !p.ok {
				if err := res.limiters[p.proc].Throttled(ctx, 0); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		if next[wi].After(end) {
			return res, start
		}
		b.clock.Set(next[wi])
		got, err := allow(ctx, res.limiters[wi])
		if err != nil {
			t.Fatal(err)
		}
		if !got.Allowed {
			next[wi] = b.clock.Now().Add(got.RetryAfter)
			continue
		}
		arrive := b.clock.Now().Add(scale(100*time.Millisecond + time.Duration(r.Int64N(int64(100*time.Millisecond)))))
		ok := kie.call(arrive)
		if ok {
			res.accepted = append(res.accepted, arrive)
		} else {
			res.refused = append(res.refused, arrive)
		}
		back := arrive.Add(scale(150*time.Millisecond + time.Duration(r.Int64N(int64(50*time.Millisecond)))))
		pending = append(pending, reply{back, wi, ok})
	}
}

func TestSimulatedKie(t *testing.T) {
	window := 10 * time.Second
	tests := []struct {
		name string
		sc   simCase
		// figures the run must reach
		minUtil          float64 // accepted ÷ (limit × (first to last accepted + one window) ÷ window)
		maxRefusedPer100 float64
		refusedAfter     time.Duration // no 429 at all after this (0: not checked)
	}{
		{"told the truth", simCase{told: Rate{20, window}, trueLimit: 20, processes: 1, duration: 5 * time.Minute},
			0.97, 1, 0},
		{"told the truth, 3 processes", simCase{told: Rate{20, window}, trueLimit: 20, processes: 3, duration: 5 * time.Minute},
			0.97, 1, 0},
		{"compressed 20/2s, 4 processes", simCase{per: 2 * time.Second, told: Rate{20, 2 * time.Second}, trueLimit: 20, processes: 4, duration: time.Minute},
			0.97, 1, 0},
		{"told 3x the limit", simCase{told: Rate{60, window}, trueLimit: 20, processes: 1, duration: 5 * time.Minute},
			0.85, 10, 3 * window},
		{"told 3x the limit, 3 processes", simCase{told: Rate{60, window}, trueLimit: 20, processes: 3, duration: 5 * time.Minute},
			0.85, 10, 3 * window},
		{"told 3x, probing every 3 minutes", simCase{told: Rate{60, window}, trueLimit: 20, processes: 2, duration: 15 * time.Minute, probeAfter: 3 * time.Minute},
			0.85, 10, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, start := simulate(t, tc.sc)
			per := cmp.Or(tc.sc.per, window)
			util := issueUtilisation(res.accepted, Rate{tc.sc.trueLimit, per})
			per100 := 100 * float64(len(res.refused)) / float64(len(res.accepted))
			s := res.limiters[0].Stats()
			t.Logf("accepted %d (%.1f%% of the true limit), 429s %d (%.1f per 100 accepted), learned ceiling %d, rate %.2f/s",
				len(res.accepted), 100*util, len(res.refused), per100, s.LearnedCeiling, s.CurrentRate)
			if util < tc.minUtil {
				t.Errorf("utilisation %.3f, want at least %.2f", util, tc.minUtil)
			}
			if per100 > tc.maxRefusedPer100 {
				t.Errorf("%.1f 429s per 100 accepted, want at most %v", per100, tc.maxRefusedPer100)
			}
			if tc.sc.told.Events <= tc.sc.trueLimit && len(res.refused) > 0 {
				t.Errorf("%d 429s told the true limit: the arrival margin did not hold", len(res.refused))
			}
			if tc.refusedAfter > 0 {
				if n := res.refusedAfter(start, tc.refusedAfter); n > 0 {
					t.Errorf("%d 429s after the first %v", n, tc.refusedAfter)
				}
			}
			if w := maxInWindow(res.accepted, per); w > tc.sc.trueLimit {
				t.Fatalf("the model accepted %d in a window: the test's Kie is broken", w)
			}
		})
	}
}

func TestSimulatedStorm(t *testing.T) {
	window := 10 * time.Second
	// Told the truth; Kie refuses everything for a minute after the first minute.
	sc := simCase{told: Rate{20, window}, trueLimit: 20, processes: 2, duration: 6 * time.Minute,
		storm: [2]time.Duration{time.Minute, 2 * time.Minute}}
	res, start := simulate(t, sc)
	s := res.limiters[0].Stats()
	after := res.acceptedIn(start, 4*time.Minute, 6*time.Minute)
	util := float64(after) / (120 / 10 * 20)
	t.Logf("429s %d; accepted in the last 2 minutes %d (%.1f%%); ceiling %d, rate %.3f/s of %.3f/s",
		len(res.refused), after, 100*util, s.LearnedCeiling, s.CurrentRate, s.ConfiguredRate)
	if s.LearnedCeiling != 0 {
		t.Errorf("the storm taught a ceiling of %d", s.LearnedCeiling)
	}
	if util < 0.97 {
		t.Errorf("utilisation %.3f two minutes after the storm, want back at 0.97 or more", util)
	}
	if n := res.refusedAfter(start, 2*time.Minute+window); n > 0 {
		t.Errorf("%d 429s after the storm ended", n)
	}
	// During the storm the limiter backs off instead of spending tokens on refusals.
	if n := len(res.refused); n > 40 {
		t.Errorf("%d calls refused during a one-minute storm, want the rate cut to a trickle", n)
	}
}
