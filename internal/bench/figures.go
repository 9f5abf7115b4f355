package bench

import (
	"math"
	"slices"
	"time"
)

// Figures are what one client achieved in one case, as the simulator saw it.
type Figures struct {
	// Client is "kontextq" or "naive".
	Client string
	// Jobs is the batch size; Archived and Failed are how the jobs ended.
	Jobs, Archived, Failed int
	// Accepted counts generate calls that created a (paid) task.
	Accepted int
	// RateLimited counts generate calls answered 429, storm included.
	RateLimited int
	// LateRateLimited counts the 429s to generate calls that arrived after the first
	// WarmupWindows windows of the run (counted from the first generate call) and outside a
	// storm: the ones a client that learns the limit should no longer cause.
	LateRateLimited int
	// PollRateLimited counts record-info calls answered 429 (their own budget).
	PollRateLimited int
	// MaxInWindow is the most accepted generate calls in any sliding window: never above the
	// limit, since the simulator refuses the excess.
	MaxInWindow int
	// Utilisation is the share of the true limit used in the run's whole windows: see
	// utilisation. NaN when the run was shorter than one whole window.
	Utilisation float64
	// Windows is the number of whole windows Utilisation was measured over.
	Windows int
	// SpanUtilisation is accepted calls ÷ (limit × (span from the first to the last accepted
	// call + one window) ÷ window): see spanUtilisation. Unlike Utilisation it counts the first
	// window and the last, so a client that wastes either scores less.
	SpanUtilisation float64
	// Elapsed is the batch's wall time, from the start of work to the last job archived.
	Elapsed time.Duration
	// Ideal is the least time the limit allows: Jobs / limit × window plus one median
	// generation, plus the storm's length in the storm case (nothing can be accepted during a
	// storm).
	Ideal time.Duration
	// TimedOut says the batch was not finished when the run gave up on it.
	TimedOut bool
	// PaidTwice counts accepted calls that paid again for an image already paid for and not
	// failed (kiesim's live duplicates).
	PaidTwice int
	// LatencyP50, LatencyP95 and LatencyMax describe the time from a task's completion (the
	// simulator's) to its image archived (the ledger's archivedAt; for the naive client, its
	// download done), over the Latencies jobs that were archived.
	LatencyP50, LatencyP95, LatencyMax time.Duration
	Latencies                          int
	// RecordInfoCalls counts the record-info calls that reached the simulator, refused ones
	// included.
	RecordInfoCalls int
	// FocusJobs is the size of the batch loaded behind the main one; FocusArchived how many of
	// them were archived; FocusDone the time from the start of its load to its last job done.
	FocusJobs, FocusArchived int
	FocusDone                time.Duration
}

// PollsPerJob is the record-info calls per job of the run.
func (f Figures) PollsPerJob() float64 {
	if f.Jobs == 0 {
		return math.NaN()
	}
	return float64(f.RecordInfoCalls) / float64(f.Jobs)
}

// setLatencies fills the latency figures from each archived task's completion and archive time.
func (f *Figures) setLatencies(ls []time.Duration) {
	f.Latencies = len(ls)
	if len(ls) == 0 {
		return
	}
	slices.Sort(ls)
	f.LatencyP50, f.LatencyP95, f.LatencyMax = quantile(ls, 0.5), quantile(ls, 0.95), ls[len(ls)-1]
}

// quantile is the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// WarmupWindows is how many windows a client may spend learning the limit before its 429s count
// as late.
const WarmupWindows = 3

// Per100 is the number of 429s to generate calls per 100 accepted calls.
func (f Figures) Per100() float64 {
	if f.Accepted == 0 {
		return math.NaN()
	}
	return 100 * float64(f.RateLimited) / float64(f.Accepted)
}

// VsIdeal is Elapsed / Ideal: 1 is the best the limit allows.
func (f Figures) VsIdeal() float64 {
	if f.Ideal <= 0 {
		return math.NaN()
	}
	return f.Elapsed.Seconds() / f.Ideal.Seconds()
}

// interval is a closed span of time, [from, to].
type interval struct{ from, to time.Time }

func (iv interval) overlaps(from, to time.Time) bool {
	return !iv.from.IsZero() && from.Before(iv.to) && iv.from.Before(to)
}

func (iv interval) contains(t time.Time) bool {
	return !iv.from.IsZero() && !t.Before(iv.from) && !t.After(iv.to)
}

// utilisation is the share of the true limit a run used. The run is cut into consecutive
// windows [t0+k·window, t0+(k+1)·window) from its first accepted call t0; the whole windows
// that end by the last accepted call (the steady part: the queue still had work for all of
// them) count, except any that overlaps skip (a storm, when nothing can be accepted).
// Utilisation is the calls accepted in the counted windows over limit × their number. No legal
// pattern of calls can exceed 1: a strict sliding window never holds more than limit calls. It
// returns NaN and 0 when no whole window counts.
func utilisation(accepted []time.Time, limit int, window time.Duration, skip interval) (float64, int) {
	if len(accepted) == 0 || limit <= 0 || window <= 0 {
		return math.NaN(), 0
	}
	ts := slices.Clone(accepted)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	t0, last := ts[0], ts[len(ts)-1]
	k := int(last.Sub(t0) / window)
	counts := make([]int, k)
	for _, t := range ts {
		if i := int(t.Sub(t0) / window); i < k {
			counts[i]++
		}
	}
	sum, n := 0, 0
	for i, c := range counts {
		from := t0.Add(time.Duration(i) * window)
		if skip.overlaps(from, from.Add(window)) {
			continue
		}
		sum += c
		n++
	}
	if n == 0 {
		return math.NaN(), 0
	}
	return float64(sum) / float64(limit*n), n
}

// spanUtilisation is accepted calls ÷ (limit × (span from the first to the last accepted call +
// one window) ÷ window), the share of the limit used from the first call on: a client that sends
// its first window at once and every later one as soon as it frees scores 1, one that spaces its
// calls evenly scores n ÷ (n + limit - 1) for n calls. The storm's length, when the run had one,
// is taken off the span (nothing can be accepted during it). NaN when nothing was accepted.
func spanUtilisation(accepted []time.Time, limit int, window time.Duration, storm interval) float64 {
	if len(accepted) == 0 || limit <= 0 || window <= 0 {
		return math.NaN()
	}
	first, last := accepted[0], accepted[0]
	for _, t := range accepted {
		if t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	span := last.Sub(first)
	if storm.overlaps(first, last) {
		from, to := storm.from, storm.to
		if from.Before(first) {
			from = first
		}
		if to.After(last) {
			to = last
		}
		span -= to.Sub(from)
	}
	return float64(len(accepted)) / (float64(limit) * (span + window).Seconds() / window.Seconds())
}

// answer is one generate answer as the simulator's middleware saw it: when the request arrived
// and the Kie code it got (body code, whatever the signal form).
type answer struct {
	at   time.Time
	code int
}

// lateRateLimited counts the 429s among answers that arrived WarmupWindows windows or more after
// the first generate call, outside skip.
func lateRateLimited(answers []answer, window time.Duration, skip interval) int {
	if len(answers) == 0 {
		return 0
	}
	first := answers[0].at
	for _, a := range answers {
		if a.at.Before(first) {
			first = a.at
		}
	}
	after := first.Add(WarmupWindows * window)
	n := 0
	for _, a := range answers {
		if a.code == 429 && !a.at.Before(after) && !skip.contains(a.at) {
			n++
		}
	}
	return n
}
