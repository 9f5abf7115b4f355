package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure kontextq against the Kie simulator",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchRateLimitCmd())
	return cmd
}

func newBenchRateLimitCmd() *cobra.Command {
	var (
		o          bench.Options
		cases, out string
		rate       string
		limit      int
		window     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ratelimit",
		Short: "Measure how much of a strict rate limit the real pipeline uses, against a naive client",
		Long: `ratelimit runs the real pipeline (enqueuer, worker processes, shared limiter) on Redis against an
in-process Kie simulator whose strict limit is compressed in time (--rate, by default 20/2s: 20 per
2 s instead of Kie's 20 per 10 s), then a naive client (fixed concurrency, sleep 10 s on a
429, poll every 3 s; both compressed likewise) against the same limit, and prints for each case
the utilisation of the true limit (over whole windows, and over the span from the first to the
last accepted call plus one window), 429s, and the time against the ideal. Cases: one (1 process
told the true limit), four (4 processes), overtold (1 process told 3× the limit), storm (a storm
of 429s in the middle of the batch), idle60 (60 jobs on an idle account) and four200 (200 jobs
on 4 processes); idle60 and four200 keep their own batch size whatever --jobs says. Each case
uses a fresh namespace and deletes its keys afterwards. It exits 1 when kontextq misses a case's
target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, needRedis)
			if err != nil {
				return err
			}
			cs, err := bench.SelectCases(cases)
			if err != nil {
				return usageErr(fmt.Errorf("--cases: %w", err))
			}
			r, rerr := parseRateFlag("--rate", rate)
			o.Limit, o.Window = r.Events, r.Per
			f := cmd.Flags()
			if f.Changed("limit") || f.Changed("window") { // the spellings of earlier releases
				o.Limit, o.Window, rerr = limit, window, nil
			}
			var bad error
			if o.Limit <= 0 || o.Window <= 0 || o.Jobs <= 0 || o.Storm <= 0 {
				bad = errors.New("--rate, --jobs and --storm must be positive")
			}
			if err := errors.Join(rerr, bad); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			rdb, err := app.OpenRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			o.Redis = rdb
			// Enough submit workers that the limiter, not the worker count, is the bottleneck,
			// unless --submit-workers says otherwise.
			o.SubmitWorkers = 8
			if cmd.Flags().Changed("submit-workers") {
				o.SubmitWorkers = cfg.SubmitWorkers
			}
			o.Logger = app.NewLogger(cfg, cmd.ErrOrStderr())

			results, runErr := bench.Run(ctx, o, cs)
			var md strings.Builder
			if err := bench.Markdown(&md, o, results); err != nil {
				return err
			}
			if len(results) > 0 {
				fmt.Fprint(cmd.OutOrStdout(), md.String())
			}
			if out != "" && len(results) > 0 {
				if err := os.WriteFile(out, []byte(md.String()), 0o644); err != nil {
					return fmt.Errorf("--out: %w", err)
				}
			}
			if runErr != nil {
				return runErr
			}
			var missed []string
			for _, r := range results {
				for _, m := range r.Misses() {
					missed = append(missed, r.Case.Name+": "+m)
				}
			}
			if len(missed) > 0 {
				return &exitError{code: exitFailed, err: fmt.Errorf("targets missed:\n  %s", strings.Join(missed, "\n  "))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rate, "rate", "20/2s", "generate calls the simulated account accepts per strict window, as N/DURATION "+
		"(Kie's window is 10s; every other duration is compressed by the same factor)")
	f.DurationVar(&window, "window", 2*time.Second, "the window of --rate")
	f.IntVar(&limit, "limit", 20, "the calls of --rate")
	_ = f.MarkDeprecated("window", "use --rate N/DURATION")
	_ = f.MarkDeprecated("limit", "use --rate N/DURATION")
	f.IntVar(&o.Jobs, "jobs", 300, "jobs per case (idle60 and four200 keep 60 and 200)")
	f.StringVar(&cases, "cases", "all", "comma-separated cases to run: one, four, overtold, storm, idle60, four200, or all")
	f.StringVar(&out, "out", "", "also write the results as a markdown table to this file")
	f.DurationVar(&o.Storm, "storm", time.Minute, "length of the storm of 429s in the storm case")
	f.IntVar(&o.NaiveConcurrency, "naive-concurrency", 8, "goroutines of the naive client per process")
	f.BoolVar(&o.SkipNaive, "skip-naive", false, "leave the naive baseline out")
	f.Int64Var(&o.Seed, "seed", 1, "seed of the simulator's random choices")
	return cmd
}
