package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kie's real budgets, which a scale compresses in time.
const (
	kieWindow     = 10 * time.Second // generate: 20 per 10 s
	kiePollEvents = 10               // record-info: 10 per second
	kiePollPer    = time.Second
	// The naive client's timings, as the issue states them in real time.
	naiveSleepOn429 = 10 * time.Second
	naivePollEvery  = 3 * time.Second
)

// LoadFunc loads the job file at path into batch of namespace, as `kontextq load` does (with its
// default priority, bulk). The binary passes its own loader; tests may leave it nil for a plain
// one (a jobs.Reader and an Enqueuer of bulk jobs).
type LoadFunc func(ctx context.Context, rdb redis.UniversalClient, namespace, path, batch string) error

// Options configure a benchmark run. Zero values take the defaults named.
type Options struct {
	// Redis is the server the pipeline runs on; required. Each case uses a fresh namespace and
	// deletes its keys when it ends.
	Redis redis.UniversalClient
	// Scale is the account's true limit and the simulator's timings (Compressed()).
	Scale Scale
	// Jobs is the batch size of the cases that do not name their own (300).
	Jobs int
	// Storm is the length of the storm of 429s in the storm case (60 s, not compressed: the
	// issue asks for a minute of storm).
	Storm time.Duration
	// NaiveConcurrency is the naive client's goroutines per simulated process (the scale's
	// limit: as many as the account accepts calls per window).
	NaiveConcurrency int
	// SkipNaive leaves the naive baseline out.
	SkipNaive bool
	// Namespace starts the namespace of every run ("kqbench"); a random suffix and the case's
	// name follow, so runs never share keys.
	Namespace string
	// Seed drives the simulator's random choices (1).
	Seed int64
	// Load loads a job file as the binary's load command does (nil: a plain reader).
	Load LoadFunc
	// Logger receives progress at info level and the workers' warnings (slog.Default()).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Redis == nil {
		return errors.New("bench: Options.Redis is required")
	}
	if o.Scale.Limit < 0 || o.Scale.Window < 0 || o.Jobs < 0 || o.Storm < 0 {
		return errors.New("bench: the scale's limit and window, Jobs and Storm must not be negative")
	}
	if o.Scale.Limit == 0 || o.Scale.Window == 0 {
		o.Scale = Compressed()
	}
	if o.Scale.GenMedian <= 0 {
		o.Scale.GenMedian = o.Scale.compress(8 * time.Second)
	}
	if o.Jobs == 0 {
		o.Jobs = 300
	}
	if o.Storm == 0 {
		o.Storm = time.Minute
	}
	if o.NaiveConcurrency <= 0 {
		o.NaiveConcurrency = o.Scale.Limit
	}
	if o.Namespace == "" {
		o.Namespace = "kqbench"
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Load == nil {
		o.Load = loadFile
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// jobsOf is the size of c's main batch.
func (o *Options) jobsOf(c Case) int {
	if c.Jobs > 0 {
		return c.Jobs
	}
	return o.Jobs
}

// ideal is the least wall time the true limit allows for the case's jobs: every call at the
// limit, plus one median generation for the last ones, plus the storm (nothing can be accepted
// during one).
func (o *Options) ideal(c Case) time.Duration {
	n := o.jobsOf(c) + c.Behind.Jobs
	d := time.Duration(float64(n)/float64(o.Scale.Limit)*float64(o.Scale.Window)) + o.Scale.GenMedian
	if c.Storm {
		d += o.Storm
	}
	return d
}

// Case is one scenario of the benchmark.
type Case struct {
	// Name selects the case on the command line.
	Name string
	// Title describes it in the report.
	Title string
	// Processes is the number of worker processes sharing the account (and, for the naive
	// client, the number of its processes).
	Processes int
	// Told is the rate the workers are told, as a multiple of the true limit (1 when 0).
	Told float64
	// Jobs, when set, is the case's batch size instead of Options.Jobs.
	Jobs int
	// Storm makes every generate call answer 429 for Options.Storm, starting when half the
	// batch has been accepted.
	Storm bool
	// Faults are the simulator's fault rates.
	Faults Faults
	// ResultTTL, in Kie's time (compressed with the scale), is how long a result can be
	// downloaded after its completion; 0 is Kie's 14 days.
	ResultTTL time.Duration
	// Maintenance is the length (not compressed) of a maintenance window (code 455 to every
	// call) that starts when a sixth of the batch has been accepted.
	Maintenance time.Duration
	// Behind is a second, small batch loaded one window after work started.
	Behind Behind
	// Target is what kontextq must achieve in the case.
	Target Target
}

// told is the rate, in calls per window, the workers of c are told.
func (c Case) told(limit int) int {
	if c.Told <= 0 {
		return limit
	}
	return int(math.Round(c.Told * float64(limit)))
}

// Faults are shares of calls the simulator spoils (see kiesim.Options).
type Faults struct {
	GenerationFailure float64 // tasks that end with successFlag 3, errorCode 501
	Transient         float64 // API calls answered 500 before anything happens
	Truncate          float64 // image downloads cut off mid-body
}

func (f Faults) any() bool { return f.GenerationFailure > 0 || f.Transient > 0 || f.Truncate > 0 }

// Behind is a small batch that arrives while the main one is being worked: a file loaded as
// `kontextq load` does, or one job posted to the HTTP API (POST /v1/jobs), each with the
// default priority of its path.
type Behind struct {
	Jobs int
	API  bool
}

// focusBatch is the batch name of Behind's jobs.
const focusBatch = "behind"

// Target is a case's requirement on kontextq's figures. Zero fields are not checked.
type Target struct {
	MinUtilisation     float64 // share of the true limit over whole windows
	MinSpanUtilisation float64 // Figures.SpanUtilisation
	MaxRateLimited     int     // 429s in all; checked when CheckTotal429 is set
	CheckTotal429      bool
	MaxPer100          float64 // 429s per 100 accepted; checked when Check429 is set
	Check429           bool
	NoLate429          bool // no 429 after the first WarmupWindows windows
	NoFailure          bool // every job archived
	NotPaidTwice       bool // no image paid for twice (kiesim's live duplicates)
	// MaxVsIdeal bounds the wall time as a multiple of the ideal.
	MaxVsIdeal float64
	// OverIdeal and OverIdealWindows bound the wall time as the ideal plus this time and this
	// many windows.
	OverIdeal        time.Duration
	OverIdealWindows float64
	// FocusWindows windows plus FocusMedians median generations bound the time from the
	// Behind batch's load to its last job done.
	FocusWindows, FocusMedians float64
	// Latency checks completion → archived against the scale's LatencyP95, and polls per job
	// against MaxPollsPerJob.
	Latency        bool
	MaxPollsPerJob float64
}

// The target for polls per job, on average.
const maxPollsPerJob = 3

// Cases are every case, in order: the rate-limit cases first (one, four, overtold, storm,
// idle60, four200), then the scheduling ones.
func Cases() []Case {
	return []Case{
		{Name: "one", Title: "1 worker process, told the true limit", Processes: 1,
			Target: Target{MinUtilisation: 0.97, MaxPer100: 1, Check429: true, NoFailure: true, NotPaidTwice: true}},
		{Name: "four", Title: "4 worker processes on one Redis, told the true limit", Processes: 4,
			Target: Target{MinUtilisation: 0.95, MaxPer100: 1, Check429: true, NoFailure: true, NotPaidTwice: true}},
		{Name: "overtold", Title: "1 process told 3× the true limit", Processes: 1, Told: 3,
			Target: Target{MaxVsIdeal: 1.25, MaxRateLimited: 10, CheckTotal429: true, NoLate429: true, NoFailure: true, NotPaidTwice: true}},
		{Name: "storm", Title: "a storm of 429s in the middle of the batch", Processes: 1, Storm: true,
			Target: Target{NoFailure: true, NotPaidTwice: true}},
		{Name: "idle60", Title: "60 jobs on an idle account, 1 worker process", Processes: 1, Jobs: 60,
			Target: Target{MinSpanUtilisation: 0.97, MaxVsIdeal: 1.3, NoFailure: true, NotPaidTwice: true,
				Latency: true, MaxPollsPerJob: maxPollsPerJob}},
		{Name: "four200", Title: "200 jobs on 4 worker processes", Processes: 4, Jobs: 200,
			Target: Target{MinSpanUtilisation: 0.97, MaxPer100: 1, Check429: true, NoFailure: true, NotPaidTwice: true,
				Latency: true, MaxPollsPerJob: maxPollsPerJob}},
		{Name: "faults", Title: "faults: 10% generation failures, 5% transient 500s, 5% truncated downloads, told 25% over the true limit",
			Processes: 1, Jobs: 200, Told: 1.25,
			Faults: Faults{GenerationFailure: 0.10, Transient: 0.05, Truncate: 0.05},
			Target: Target{MaxVsIdeal: 1.6, NotPaidTwice: true}},
		{Name: "expire", Title: "150 jobs whose results expire soon after completion (2 s compressed, 10 s at Kie's scale)", Processes: 1, Jobs: 150,
			ResultTTL: 10 * time.Second,
			Target:    Target{NoFailure: true, NotPaidTwice: true}},
		{Name: "behind-file", Title: "a 5-job batch loaded from a file behind a 300-job batch", Processes: 1, Jobs: 300,
			Behind: Behind{Jobs: 5},
			Target: Target{NoFailure: true, NotPaidTwice: true, FocusWindows: 1, FocusMedians: 2}},
		{Name: "behind-api", Title: "1 job posted to the HTTP API behind a 300-job batch", Processes: 1, Jobs: 300,
			Behind: Behind{Jobs: 1, API: true},
			Target: Target{NoFailure: true, NotPaidTwice: true, FocusWindows: 1, FocusMedians: 2}},
		{Name: "maintenance", Title: "a 4 s maintenance window (code 455) early in a 60-job batch", Processes: 1, Jobs: 60,
			Maintenance: 4 * time.Second,
			Target:      Target{NoFailure: true, NotPaidTwice: true, OverIdeal: 4*time.Second + 3*time.Second, OverIdealWindows: 1}},
	}
}

// Suites name the usual selections of cases.
var (
	RateLimitCases  = "one,four,overtold,storm,idle60,four200"
	SchedulingCases = "idle60,four200,faults,overtold,expire,behind-file,behind-api,maintenance"
)

// SelectCases picks cases by a comma-separated list of names; "all" means every case.
func SelectCases(names string) ([]Case, error) {
	all := Cases()
	if names == "all" {
		return all, nil
	}
	var out []Case
	for n := range strings.SplitSeq(names, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, c := range all {
			if c.Name == n {
				out, found = append(out, c), true
				break
			}
		}
		if !found {
			var known []string
			for _, c := range all {
				known = append(known, c.Name)
			}
			return nil, fmt.Errorf("unknown case %q: want all or some of %s", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// Result is one case's figures for kontextq and, unless skipped, the naive client.
type Result struct {
	Case     Case
	Scale    Scale
	Kontextq Figures
	Naive    *Figures
}

// The figures a target is about, naming misses and the summary's rows.
const (
	figSpan       = "utilisation over the span"
	figUtil       = "utilisation of whole windows"
	figWall       = "wall time"
	figPer100     = "429s per 100 accepted"
	figAll429     = "429s in all"
	figLate429    = "429s after the first windows"
	figEnded      = "archived / failed"
	figPaidTwice  = "images paid twice"
	figFocus      = "batch behind: load → last job archived"
	figLatencyP95 = "completion → archived, p95"
	figPolls      = "polls per job"
)

// miss is one target missed: the figure it is about and what was measured.
type miss struct{ figure, text string }

// Misses lists the case's targets kontextq did not meet; empty when all were met.
func (r Result) Misses() []string {
	var out []string
	for _, m := range r.misses() {
		out = append(out, m.text)
	}
	return out
}

func (r Result) misses() []miss {
	t, f, s := r.Case.Target, r.Kontextq, r.Scale
	var out []miss
	add := func(figure, format string, args ...any) {
		out = append(out, miss{figure, fmt.Sprintf(format, args...)})
	}
	if f.TimedOut {
		add(figEnded, "unfinished after %s: %d of %d archived, %d failed", f.Elapsed.Round(time.Second), f.Archived, f.Jobs, f.Failed)
	}
	switch {
	case t.MinUtilisation <= 0:
	case math.IsNaN(f.Utilisation):
		add(figUtil, "utilisation not measured: no whole window to measure (use more --jobs)")
	case f.Utilisation < t.MinUtilisation:
		add(figUtil, "utilisation %s < %s", pct(f.Utilisation), pct(t.MinUtilisation))
	}
	if t.MinSpanUtilisation > 0 && !(f.SpanUtilisation >= t.MinSpanUtilisation) {
		add(figSpan, "utilisation over the span %s < %s", pct(f.SpanUtilisation), pct(t.MinSpanUtilisation))
	}
	if t.CheckTotal429 && f.RateLimited > t.MaxRateLimited {
		add(figAll429, "%d 429s in all > %d", f.RateLimited, t.MaxRateLimited)
	}
	if t.Check429 && !(f.Per100() <= t.MaxPer100) {
		add(figPer100, "%.1f 429s per 100 accepted > %g", f.Per100(), t.MaxPer100)
	}
	if t.NoLate429 && f.LateRateLimited > 0 {
		add(figLate429, "%d 429s after the first %d windows", f.LateRateLimited, WarmupWindows)
	}
	if t.NoFailure && !f.TimedOut && (f.Failed > 0 || f.Archived < f.Jobs) {
		add(figEnded, "%d of %d jobs archived, %d failed", f.Archived, f.Jobs, f.Failed)
	}
	if t.NotPaidTwice && f.PaidTwice > 0 {
		add(figPaidTwice, "%d images paid twice", f.PaidTwice)
	}
	if t.MaxVsIdeal > 0 && !(f.VsIdeal() <= t.MaxVsIdeal) {
		add(figWall, "wall %s = %s× ideal > %g×", f.Elapsed.Round(100*time.Millisecond), num(f.VsIdeal(), 2), t.MaxVsIdeal)
	}
	if lim, ok := t.wallLimit(f.Ideal, s); ok && f.Elapsed > lim {
		add(figWall, "wall %s > %s", f.Elapsed.Round(100*time.Millisecond), lim.Round(100*time.Millisecond))
	}
	if lim, ok := t.focusLimit(s); ok && (f.FocusArchived < f.FocusJobs || f.FocusDone > lim) {
		add(figFocus, "batch behind: %d of %d archived after %s > %s", f.FocusArchived, f.FocusJobs,
			f.FocusDone.Round(100*time.Millisecond), lim.Round(100*time.Millisecond))
	}
	if t.Latency && s.LatencyP95 > 0 && !(f.LatencyP95 <= s.LatencyP95) {
		add(figLatencyP95, "completion → archived p95 %s > %s", f.LatencyP95.Round(10*time.Millisecond), s.LatencyP95)
	}
	if t.Latency && t.MaxPollsPerJob > 0 && !(f.PollsPerJob() <= t.MaxPollsPerJob) {
		add(figPolls, "%s polls per job > %g", num(f.PollsPerJob(), 2), t.MaxPollsPerJob)
	}
	return out
}

// wallLimit is the longest wall time allowed as ideal plus a margin, when the target has one.
func (t Target) wallLimit(ideal time.Duration, s Scale) (time.Duration, bool) {
	if t.OverIdeal <= 0 && t.OverIdealWindows <= 0 {
		return 0, false
	}
	return ideal + t.OverIdeal + time.Duration(t.OverIdealWindows*float64(s.Window)), true
}

// focusLimit is the longest time allowed from the Behind batch's load to its last job done.
func (t Target) focusLimit(s Scale) (time.Duration, bool) {
	if t.FocusWindows <= 0 && t.FocusMedians <= 0 {
		return 0, false
	}
	return time.Duration(t.FocusWindows*float64(s.Window) + t.FocusMedians*float64(s.GenMedian)), true
}

// Run runs each case for kontextq and then, unless o.SkipNaive, for the naive client, at
// o.Scale. A case whose run fails (Redis down) ends Run with the results so far and the error; a
// batch that does not finish in time and targets missed are not errors (see Result.Misses).
func Run(ctx context.Context, o Options, cases []Case) ([]Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var out []Result
	for _, c := range cases {
		r := Result{Case: c, Scale: o.Scale}
		o.Logger.Info("bench: case starts", "case", c.Name, "scale", o.Scale.Name, "client", "kontextq", "jobs", o.jobsOf(c),
			"limit", fmt.Sprintf("%d/%s", o.Scale.Limit, o.Scale.Window), "processes", c.Processes, "told", c.told(o.Scale.Limit))
		f, err := runKontextq(ctx, o, c)
		if err != nil {
			return out, fmt.Errorf("case %s, kontextq: %w", c.Name, err)
		}
		r.Kontextq = f
		logFigures(o.Logger, c, f)
		if !o.SkipNaive {
			o.Logger.Info("bench: case starts", "case", c.Name, "scale", o.Scale.Name, "client", "naive", "goroutines", c.Processes*o.NaiveConcurrency)
			nf, err := runNaive(ctx, o, c)
			if err != nil {
				return out, fmt.Errorf("case %s, naive client: %w", c.Name, err)
			}
			r.Naive = &nf
			logFigures(o.Logger, c, nf)
		}
		out = append(out, r)
	}
	return out, nil
}

func logFigures(log *slog.Logger, c Case, f Figures) {
	log.Info("bench: case done", "case", c.Name, "client", f.Client, "utilisation", pct(f.Utilisation),
		"span_utilisation", pct(f.SpanUtilisation),
		"429s_per_100", fmt.Sprintf("%.1f", f.Per100()), "late_429s", f.LateRateLimited,
		"elapsed", f.Elapsed.Round(10*time.Millisecond), "vs_ideal", fmt.Sprintf("%.2f", f.VsIdeal()),
		"latency_p95", f.LatencyP95.Round(10*time.Millisecond), "polls_per_job", num(f.PollsPerJob(), 2),
		"behind_done", f.FocusDone.Round(10*time.Millisecond),
		"archived", f.Archived, "failed", f.Failed, "timed_out", f.TimedOut)
}

// newNamespace is a fresh, unique namespace for one run: every key the run creates holds it.
func newNamespace(o Options, c Case, client string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return o.Namespace + "-" + hex.EncodeToString(b) + "-" + c.Name + "-" + client
}

// deleteNamespace deletes every key holding ns and ns's queues in asynq's queue set. SCAN walks
// the whole keyspace whatever the pattern, so it asks for large pages and has minutes: a shared
// server may hold millions of other keys.
func deleteNamespace(rdb redis.UniversalClient, ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var keys []string
	iter := rdb.Scan(ctx, 0, "*"+ns+"*", 20000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("bench: listing the keys of %s: %w", ns, err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rdb.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("bench: deleting the keys of %s: %w", ns, err)
		}
		keys = keys[n:]
	}
	qs, err := rdb.SMembers(ctx, "asynq:queues").Result()
	if err != nil {
		return fmt.Errorf("bench: reading asynq's queue set: %w", err)
	}
	for _, q := range qs {
		if strings.Contains(q, ns) {
			if err := rdb.SRem(ctx, "asynq:queues", q).Err(); err != nil {
				return fmt.Errorf("bench: removing queue %s: %w", q, err)
			}
		}
	}
	return nil
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}
