package worker

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/jobs"
)

// The poll schedule: everything about when a submitted task is polled lives in this file.
//
// Generation times are learned online, per model and mode (generate or edit), as a lognormal
// distribution: an exponentially weighted mean and variance of ln(seconds), shared by every worker
// process through one small Redis hash per namespace, model and mode. Each success adds one
// observation: Kie's completeTime − createTime when Kie reports both, else the time from
// submission to the poll that saw the result (an upper bound).
//
// From the estimate (median m, spread σ of ln seconds), the number of jobs in flight n and the
// poll budget R (record-info calls per second), a task is polled:
//   - first at m·e^(−0.6σ), before the median (at σ = 0.5, when a quarter of tasks are done),
//     give or take half a steady wait: each job has its own fixed phase, so that the jobs of one
//     window, submitted together, are not all polled at one instant;
//   - then every 0.6·σ·m (0.3 m at σ = 0.5) while the task is within the usual times, up to
//     m·e^(2.5σ), past which fewer than one task in a hundred runs; a task slower than that is
//     polled every σ/2·e of its elapsed time e (geometric: the longer it runs, the less a poll
//     buys);
//   - after the first, never sooner than the floor max(m/10, n/(0.8·R)): a tenth of the median, and the share of
//     the poll budget one of n jobs may spend, so many jobs in flight slow each one's polls
//     instead of queueing on the limiter;
//   - never later than --poll-interval after the previous poll unless the budget floor asks for
//     more.
// Every delay is a multiple of m, so the schedule has no time scale of its own. Its constants
// trade polls for latency: for lognormal generation times with σ = 0.5, a task is polled about
// 2.9 times and 95% of results are seen within a third of m of their completion (0.7 s for 2 s
// generations, 2.7 s for Kie's 8 s; TestPollPlanCostAndLatency). Polling the first time later or
// spacing polls wider saves polls and costs that latency; the half-way and geometric rule this
// replaced spent 3.7 polls for a p95 near 0.4 m. Polls are run on time by timers of the process
// (see startPolls): asynq alone runs a scheduled task up to a second early or late.
//
// Until ten observations are in, σ is drawn towards the prior spread (0.5), so that the first
// few results, which are the fastest of their wave, do not make the schedule a single instant.
// Before anything is learned, the prior (--first-poll) is only a guess at the time scale, and
// the first observation is worth more than any poll: the first jobs are polled from an eighth of
// the prior on, each wait half the time elapsed (polls at 1/8, 1/4, 3/8, 9/16… of the prior),
// within the same floor and ceiling. Whatever the true generation time, the first result is seen
// within about one and a half times its time, and the next poll of every job follows what it
// taught. The first observation replaces the prior, the next few average in (weight 1/n, then a
// steady 1/10). Callbacks remain the fast path: a callback triggers an immediate check whatever
// this schedule says.

// Estimate is the learned generation time of one model and mode.
type Estimate struct {
	Median  time.Duration
	Sigma   float64 // standard deviation of ln(duration)
	Samples int64
}

const (
	priorSigma   = 0.5   // the spread assumed before anything is learned
	minSigma     = 0.05  // below this the schedule would poll a single instant
	ewmaMinAlpha = 0.1   // the weight of a new observation once ten are in
	floorShare   = 0.1   // the shortest interval, as a fraction of the median
	budgetUse    = 0.8   // the share of the poll budget the schedule plans to spend
	scoutShare   = 0.125 // the first poll before anything is learned, as a fraction of the prior
	firstAt      = 0.6   // the first poll at m·e^(−firstAt·σ)
	gapShare     = 0.6   // the steady wait between polls, gapShare·σ·m
	stragglerAt  = 2.5   // past m·e^(stragglerAt·σ) a task is a straggler, polled geometrically
	steadyAfter  = 10    // observations after which σ is the learned one alone
)

// pollPlan holds the bounds the schedule works within.
type pollPlan struct {
	prior       time.Duration // prior median (--first-poll)
	maxInterval time.Duration // longest wait between two polls of a task (--poll-interval)
	rate        float64       // poll budget, record-info calls per second; 0 when unknown
}

func (p pollPlan) withPrior(e Estimate) Estimate {
	if e.Samples <= 0 || e.Median <= 0 {
		return Estimate{Median: p.prior, Sigma: priorSigma}
	}
	if n := float64(min(e.Samples, steadyAfter)); n < steadyAfter {
		const w = 2 // the prior spread counts as this many observations
		e.Sigma = math.Sqrt((n*e.Sigma*e.Sigma + w*priorSigma*priorSigma) / (n + w))
	}
	if e.Sigma < minSigma {
		e.Sigma = minSigma
	}
	return e
}

// floor is the shortest wait between two polls of one task with inFlight tasks in flight.
func (p pollPlan) floor(e Estimate, inFlight int64) time.Duration {
	f := time.Duration(float64(e.Median) * floorShare)
	if p.rate > 0 && inFlight > 0 {
		f = max(f, time.Duration(float64(inFlight)/(budgetUse*p.rate)*float64(time.Second)))
	}
	return f
}

// first is the delay from submission to the first poll of a job whose phase (in [−½, ½), see
// phaseOf) shifts it by up to half a steady wait either way: the jobs of a window are submitted
// together, and polling them all at one instant would queue most of them on the poll budget.
func (p pollPlan) first(e Estimate, inFlight int64, phase float64) time.Duration {
	if e.Samples <= 0 || e.Median <= 0 {
		scout := float64(p.prior) * scoutShare
		return time.Duration(scout + phase*scout/2)
	}
	e = p.withPrior(e)
	// Every task is polled at least once: the budget share only spaces the polls after it.
	gap := gapShare * e.Sigma * float64(e.Median)
	return max(time.Duration(float64(e.Median)*math.Exp(-firstAt*e.Sigma)+phase*gap), 0)
}

// phaseOf is a job's fixed place in [−½, ½), spread evenly over jobs.
func phaseOf(r jobs.Ref) float64 {
	h := fnv.New32a()
	h.Write([]byte(r.String()))
	return float64(h.Sum32())/(1<<32) - 0.5
}

// next is the delay to the next poll of a task that was still generating elapsed after its
// submission.
func (p pollPlan) next(e Estimate, elapsed time.Duration, inFlight int64) time.Duration {
	scouting := e.Samples <= 0 || e.Median <= 0
	e = p.withPrior(e)
	var d time.Duration
	switch {
	case scouting:
		d = max(elapsed/2, time.Duration(float64(p.prior)*scoutShare))
	case float64(elapsed) < float64(e.Median)*math.Exp(stragglerAt*e.Sigma):
		d = time.Duration(gapShare * e.Sigma * float64(e.Median))
	default:
		d = time.Duration(e.Sigma / 2 * float64(elapsed))
	}
	if p.maxInterval > 0 {
		d = min(d, p.maxInterval)
	}
	return max(d, p.floor(e, inFlight))
}

// genStats is the shared store of learned generation times.
type genStats struct {
	rdb redis.UniversalClient
	key func(name string) string
	ttl time.Duration
}

// modeOf names a job's kind for its statistics.
func modeOf(s *jobs.Spec) (model, mode string) {
	model, mode = s.Model, "generate"
	if model == "" {
		model = "default"
	}
	if s.IsEdit() {
		mode = "edit"
	}
	return model, mode
}

func (g *genStats) keyFor(s *jobs.Spec) string {
	model, mode := modeOf(s)
	return g.key("gentime:" + model + ":" + mode)
}

// observeScript adds one observation to the estimate in KEYS[1]. ARGV 1 ln(seconds), 2 the
// steady weight of an observation, 3 the key's lifetime (s). Fields: n, mu, var.
var observeScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'n', 'mu', 'var')
local n = (tonumber(h[1]) or 0) + 1
local mu = tonumber(h[2]) or 0
local var = tonumber(h[3]) or 0
local x = tonumber(ARGV[1])
local a = math.max(1 / n, tonumber(ARGV[2]))
local d = x - mu
mu = mu + a * d
var = (1 - a) * (var + a * d * d)
redis.call('HSET', KEYS[1], 'n', n, 'mu', string.format('%.17g', mu), 'var', string.format('%.17g', var))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return n
`)

// observe records one generation time.
func (g *genStats) observe(ctx context.Context, s *jobs.Spec, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	ttl := max(int64(g.ttl/time.Second), 1)
	err := observeScript.Run(ctx, g.rdb, []string{g.keyFor(s)}, math.Log(d.Seconds()), ewmaMinAlpha, ttl).Err()
	if err != nil {
		return fmt.Errorf("recording the generation time: %w", err)
	}
	return nil
}

// read returns the estimate for a job's model and mode (zero when nothing is learned).
func (g *genStats) read(ctx context.Context, s *jobs.Spec) (Estimate, error) {
	v, err := g.rdb.HMGet(ctx, g.keyFor(s), "n", "mu", "var").Result()
	if err != nil {
		return Estimate{}, err
	}
	num := func(x any) float64 {
		str, _ := x.(string)
		var f float64
		_, _ = fmt.Sscan(str, &f)
		return f
	}
	n, mu, vr := int64(num(v[0])), num(v[1]), num(v[2])
	if n <= 0 {
		return Estimate{}, nil
	}
	return Estimate{Median: time.Duration(math.Exp(mu) * float64(time.Second)), Sigma: math.Sqrt(max(vr, 0)), Samples: n}, nil
}

// generationTime is what a success tells about the job's generation time.
func generationTime(j *jobs.Job, create, complete, seen time.Time) time.Duration {
	if !create.IsZero() && complete.After(create) {
		return complete.Sub(create)
	}
	if !j.SubmittedAt.IsZero() && seen.After(j.SubmittedAt) {
		return seen.Sub(j.SubmittedAt)
	}
	return 0
}

// pollState reads what the schedule needs for job j: its estimate and the jobs in flight. Redis
// trouble falls back to the prior; the poll chain matters more than its timing.
func (w *Worker) pollState(ctx context.Context, j *jobs.Job) (Estimate, int64) {
	e, err := w.stats.read(ctx, &j.Spec)
	if err != nil {
		w.log.Debug("reading generation times failed; using the prior", "err", err)
	}
	n, err := w.ledger.InFlightCount(ctx)
	if err != nil {
		n = 0
	}
	return e, n
}

// firstPoll is the delay from j's submission to its first poll.
func (w *Worker) firstPoll(ctx context.Context, j *jobs.Job) time.Duration {
	e, n := w.pollState(ctx, j)
	var elapsed time.Duration
	if j.State == jobs.Submitted && !j.SubmittedAt.IsZero() {
		elapsed = w.o.Now().Sub(j.SubmittedAt) // a redelivered submit: the task is that old already
	}
	return max(w.plan.first(e, n, phaseOf(j.Ref))-elapsed, 0)
}

// nextPoll is the delay to j's next poll, j still generating.
func (w *Worker) nextPoll(ctx context.Context, j *jobs.Job) time.Duration {
	e, n := w.pollState(ctx, j)
	return w.plan.next(e, w.o.Now().Sub(j.SubmittedAt), n)
}

// learn records the generation time a success showed.
func (w *Worker) learn(ctx context.Context, j *jobs.Job, create, complete time.Time) {
	if err := w.stats.observe(ctx, &j.Spec, generationTime(j, create, complete, w.o.Now())); err != nil {
		w.log.Debug("learning the generation time failed", "job", j.Ref.String(), "err", err)
	}
}
