package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/bench"
	"github.com/kontextq/kontextq/jobs"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure kontextq against the Kie simulator",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchSchedulingCmd(), newBenchRateLimitCmd())
	return cmd
}

// benchFlags are the flags both bench commands share.
type benchFlags struct {
	o          bench.Options
	cases, out string
}

func (b *benchFlags) register(cmd *cobra.Command, cases string, jobs int) {
	f := cmd.Flags()
	f.IntVar(&b.o.Jobs, "jobs", jobs, "jobs per case, for the cases that do not name their own size (one, four, overtold, storm)")
	f.StringVar(&b.cases, "cases", cases, "comma-separated cases to run, or all: "+caseNames())
	f.StringVar(&b.out, "out", "", "also write the results as markdown tables to this file")
	f.DurationVar(&b.o.Storm, "storm", time.Minute, "length of the storm of 429s in the storm case")
	f.IntVar(&b.o.NaiveConcurrency, "naive-concurrency", 0, "goroutines of the naive client per process (default: the limit's calls per window)")
	f.BoolVar(&b.o.SkipNaive, "skip-naive", false, "leave the naive baseline out")
	f.Int64Var(&b.o.Seed, "seed", 1, "seed of the simulator's random choices")
}

func caseNames() string {
	var names []string
	for _, c := range bench.Cases() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

func newBenchSchedulingCmd() *cobra.Command {
	var (
		b      benchFlags
		scales string
	)
	cmd := &cobra.Command{
		Use:   "scheduling",
		Short: "Measure the real pipeline against issue 11's targets, beside a naive client, at two time scales",
		Long: `scheduling runs the real pipeline on Redis against an in-process Kie simulator with a strict
sliding-window limit, case by case, and in the same run a naive client (fixed concurrency, sleep
10 s on a 429, poll every 3 s) against the same account. The pipeline is the binary's: the batch
is loaded from a job file by the loader of "kontextq load", the workers are built by the same code
as "kontextq worker" with every default, and are told only the account's rates.

Scales: compressed (20 calls per 2 s, generations of 2 s median; Kie's other durations compressed
by the same factor of 5) and kie (Kie's own 20 per 10 s, 8 s generations). Cases: idle60 (60 jobs
on an idle account), four200 (200 jobs on 4 worker processes), faults (generation failures,
transient 500s, truncated downloads, told 25% over the true limit), overtold (told 3x the limit),
expire (results that expire 2 s, compressed, after completion), behind-file (a 5-job file loaded
behind a 300-job batch), behind-api (one job posted to the HTTP API behind a 300-job batch),
maintenance (a 4 s maintenance window early in a 60-job batch); the rate-limit cases one, four
and storm can be picked too. Each case uses a fresh namespace and deletes its keys afterwards.
It exits 1 when kontextq misses a target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, needRedis)
			if err != nil {
				return err
			}
			ss, serr := bench.ParseScales(scales)
			if serr != nil {
				serr = fmt.Errorf("--scale: %w", serr)
			}
			return runBench(cmd, cfg, &b, ss, serr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&scales, "scale", "compressed", "time scale: compressed (20/2s, 2s generations), kie (20/10s, 8s) or both")
	b.register(cmd, bench.SchedulingCases, 200)
	return cmd
}

func newBenchRateLimitCmd() *cobra.Command {
	var (
		b       benchFlags
		rate    string
		limit   int
		window  time.Duration
		genTime time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ratelimit",
		Short: "Measure how much of a strict rate limit the real pipeline uses, against a naive client",
		Long: `ratelimit runs the cases of "bench scheduling" at a rate of your choice (--rate, by default 20/2s:
20 per 2 s instead of Kie's 20 per 10 s; every other duration of Kie's, generations included, is
compressed by the same factor) and by default the rate-limit cases: one (1 process told the true
limit), four (4 processes), overtold (1 process told 3x the limit), storm (a storm of 429s in the
middle of the batch), idle60 (60 jobs on an idle account) and four200 (200 jobs on 4 processes).
For each it prints the utilisation of the true limit (over the span from the first to the last
accepted call plus one window, and over whole windows), 429s, and the time against the ideal,
beside the naive client's. It exits 1 when kontextq misses a case's target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, needRedis)
			if err != nil {
				return err
			}
			r, rerr := parseRateFlag("--rate", rate)
			s := bench.Scale{Name: rate, Limit: r.Events, Window: r.Per}
			f := cmd.Flags()
			if f.Changed("limit") || f.Changed("window") { // the spellings of earlier releases
				s = bench.Scale{Name: fmt.Sprintf("%d/%s", limit, window), Limit: limit, Window: window}
				rerr = nil
			}
			if f.Changed("gen-median") {
				s.GenMedian = genTime
			}
			if rerr == nil && (s.Limit <= 0 || s.Window <= 0) {
				rerr = errors.New("--rate must be positive")
			}
			return runBench(cmd, cfg, &b, []bench.Scale{s}, rerr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&rate, "rate", "20/2s", "generate calls the simulated account accepts per strict window, as N/DURATION "+
		"(Kie's window is 10s; every other duration is compressed by the same factor)")
	f.DurationVar(&window, "window", 2*time.Second, "the window of --rate")
	f.IntVar(&limit, "limit", 20, "the calls of --rate")
	_ = f.MarkDeprecated("window", "use --rate N/DURATION")
	_ = f.MarkDeprecated("limit", "use --rate N/DURATION")
	f.DurationVar(&genTime, "gen-median", 0, "median generation time of the simulator (default Kie's 8s compressed like --rate)")
	b.register(cmd, bench.RateLimitCases, 300)
	return cmd
}

// runBench runs the selected cases at each scale and prints the report; bad is a usage problem
// found by the caller, reported with the others.
func runBench(cmd *cobra.Command, cfg config.Config, b *benchFlags, scales []bench.Scale, bad error) error {
	cs, cerr := bench.SelectCases(b.cases)
	if cerr != nil {
		cerr = fmt.Errorf("--cases: %w", cerr)
	}
	var neg error
	if b.o.Jobs <= 0 || b.o.Storm <= 0 || b.o.NaiveConcurrency < 0 {
		neg = errors.New("--jobs and --storm must be positive, --naive-concurrency not negative")
	}
	if err := errors.Join(bad, cerr, neg); err != nil {
		return usageErr(err)
	}
	ctx := cmd.Context()
	rdb, err := app.OpenRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	o := b.o
	o.Redis = rdb
	o.Logger = app.NewLogger(cfg, cmd.ErrOrStderr())
	o.Load = benchLoad

	var results []bench.Result
	var runErr error
	for _, s := range scales {
		o.Scale = s
		rs, err := bench.Run(ctx, o, cs)
		results = append(results, rs...)
		if err != nil {
			runErr = err
			break
		}
	}
	var md strings.Builder
	if err := bench.Markdown(&md, o, results); err != nil {
		return err
	}
	if len(results) > 0 {
		fmt.Fprint(cmd.OutOrStdout(), md.String())
	}
	if b.out != "" && len(results) > 0 {
		if err := os.WriteFile(b.out, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	if runErr != nil {
		return runErr
	}
	var missed []string
	for _, r := range results {
		for _, m := range r.Misses() {
			missed = append(missed, r.Case.Name+" ("+r.Scale.Name+"): "+m)
		}
	}
	if len(missed) > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("targets missed:\n  %s", strings.Join(missed, "\n  "))}
	}
	return nil
}

// benchLoad loads a job file exactly as "kontextq load FILE --batch BATCH" does, every other
// flag at its default (the bulk class among them).
func benchLoad(ctx context.Context, rdb redis.UniversalClient, namespace, path, batch string) error {
	var b batchFlags
	b.register(&cobra.Command{})
	b.batch = batch
	o := b.options(path)
	if err := checkOptions(o); err != nil {
		return err
	}
	pr, err := o.priority()
	if err != nil {
		return err
	}
	rep, err := validateFile(ctx, o, io.Discard)
	if err != nil {
		return err
	}
	enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: namespace, Retention: config.Default().Retention, Priority: pr})
	defer enq.Close()
	_, err = enqueueWithProgress(ctx, enq, o, rep, io.Discard)
	return err
}
