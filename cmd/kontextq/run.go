package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/journal"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/server"
)

func newRunCmd() *cobra.Command {
	var bf batchFlags
	var noServe bool
	cmd := &cobra.Command{
		Use:   "run FILE|-",
		Short: "Load a job file, work it in this process, and exit when every job is archived or failed",
		Long: `run loads FILE (JSONL, CSV or plain text), works the batch in-process with progress, and exits
when every job is archived or failed: 0 all archived, 1 some failed (each listed with its reason)
or the run could not finish (interrupted, Redis unreachable), 2 bad usage, configuration or input.
Re-running the same command resumes; nothing is paid twice. FILE - reads the jobs from stdin
(see load --help), and --check-inputs checks every inputImage URL before anything is enqueued.
Nothing is created on disk (archive, journal, rejects) until the file, the key and Redis are
known good.

Without REDIS_URL the queue lives in this process, with a journal in the archive so that a killed
run pays for nothing twice. With a shared REDIS_URL, run is a worker of its --namespace: while it
waits for its batch it also works jobs other loads queued there.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, needKey)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			log := app.NewLogger(cfg, cmd.ErrOrStderr())
			budget, err := bf.budget.parse()
			if err != nil {
				return err
			}
			o, closeInput, err := bf.openInput(args[0])
			if err != nil {
				return err
			}
			defer closeInput()
			// Everything that can be wrong is checked before anything is created on disk or
			// started: the file and its inputs, the key, Redis; then the archive, the journal
			// and the rejects file.
			rep, err := validateFile(ctx, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			kc, err := app.NewKie(cfg)
			if err != nil {
				return err
			}
			if err := app.CheckKieKey(ctx, kc, log); err != nil {
				return err
			}
			rdb, inMemory, err := app.OpenRedisOrMemory(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			store, err := app.OpenStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			if err := app.CheckArchiveWritable(store); err != nil {
				return err
			}
			jr, err := openRunJournal(cfg, inMemory, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if jr != nil {
				defer jr.Close()
			}
			m := server.NewSharedMetrics(rdb, cfg.Namespace, log)
			defer m.Close()
			d := app.Deps{Redis: rdb, Store: store, Kie: kc, Logger: log, Observer: m}
			if jr != nil {
				d.Journal = jr
			}
			w, err := app.NewWorker(cfg, d)
			if err != nil {
				return err
			}
			defer w.Close()
			if !noServe {
				if stopServe := serveDuringRun(ctx, cfg, app.ServeDeps{Redis: rdb, Checker: w, Limiters: w.Limiters, Credits: kc, Metrics: m, Store: store, Logger: log}, cmd.OutOrStdout()); stopServe != nil {
					defer stopServe()
				}
			}
			pr, _ := o.priority() // checked by openInput
			enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention, Priority: pr})
			defer enq.Close()

			out := cmd.OutOrStdout()
			if err := applyBudget(ctx, enq, o.Batch, budget, cfg, out); err != nil {
				return err
			}
			rep, err = enqueueWithProgress(ctx, enq, o, rep, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			printLoaded(out, o, rep)
			fmt.Fprintf(out, "archive: %s\n", store.Location(o.Batch))
			if jr != nil {
				n, err := w.RestoreJournal(ctx, jr, o.Batch)
				if err != nil {
					return err
				}
				if n.Total() > 0 {
					fmt.Fprintf(out, "journal: %d jobs were submitted before: %d already archived, %d resumed at Kie, %d interrupted (not sent again)\n",
						n.Total(), n[jobs.Archived], n[jobs.Submitted], n[jobs.Failed])
				}
				if err := settleRateWindow(ctx, jr.Records(), cfg.Rate.Per, out); err != nil {
					return err
				}
			}

			return workBatch(ctx, w, o.Batch, cfg.Rate, 2*time.Second, out)
		},
	}
	bf.register(cmd)
	cmd.Flags().BoolVar(&noServe, "no-serve", false, "do not serve the dashboard, metrics, API and callbacks on --listen while the batch runs")
	return cmd
}

// serveDuringRun starts the HTTP server beside a run when it can do so safely: on a loopback
// address a token is optional (only local users reach it); elsewhere it needs KONTEXTQ_API_TOKEN.
// A busy port or a missing token is reported and the batch goes on without it.
func serveDuringRun(ctx context.Context, cfg config.Config, d app.ServeDeps, out io.Writer) (stop func()) {
	if cfg.APIToken == "" {
		if !server.IsLoopback(cfg.Listen) {
			d.Logger.Warn("not serving the dashboard: --listen is not a loopback address and KONTEXTQ_API_TOKEN is not set", "listen", cfg.Listen)
			return nil
		}
		d.InsecureNoToken = true
	}
	addr, stop, err := app.StartServer(ctx, cfg, d)
	if err != nil {
		d.Logger.Warn("not serving the dashboard (use --listen to choose another address, --no-serve to silence this)", "err", err)
		return nil
	}
	fmt.Fprintf(out, "dashboard: http://%s/monitoring/  metrics: http://%s/metrics\n", addr, addr)
	return stop
}

// settleRateWindow waits, when run resumes without REDIS_URL, until Kie's rate window holds none
// of the previous process's generate calls. The new in-memory limiter cannot know of them: an
// immediate submission would meet a 429, from which the limiter learns a limit as low as its own
// few calls in that window, and the rest of the batch would go at a fraction of the account's rate.
func settleRateWindow(ctx context.Context, recs []journal.Record, window time.Duration, out io.Writer) error {
	d := previousCallsWait(recs, window, time.Now())
	if d <= 0 {
		return nil
	}
	fmt.Fprintf(out, "waiting %s for the previous run's calls to leave Kie's rate window\n", d.Round(100*time.Millisecond))
	select {
	case <-ctx.Done():
		return &exitError{code: exitFailed, err: errors.New("interrupted; run the same command again to finish the batch (nothing is paid twice)")}
	case <-time.After(d):
		return nil
	}
}

// previousCallsWait is how long from now until the latest submission recs hold is a window old.
func previousCallsWait(recs []journal.Record, window time.Duration, now time.Time) time.Duration {
	var last time.Time
	for _, r := range recs {
		if r.SubmittedAt.After(last) {
			last = r.SubmittedAt
		}
	}
	if last.IsZero() {
		return 0
	}
	return max(0, min(window, last.Add(window).Sub(now)))
}

func validBatch(b string) error {
	s := jobs.Spec{Batch: b, Prompt: "x"}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("--batch %q: %v", b, err)
	}
	return nil
}

// workBatch runs w until batch has finished, showing its progress, then prints the outcome and
// returns run's exit status.
func workBatch(ctx context.Context, w *app.Worker, batch string, rate ratelimit.Rate, every time.Duration, out io.Writer) error {
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	err := followBatch(ctx, w.Ledger(), batch, rate, every, true, out)
	stop()
	if werr := <-done; werr != nil && err == nil {
		err = werr
	}
	if errors.Is(err, errInterrupted) {
		return &exitError{code: exitFailed, err: errors.New("interrupted; run the same command again to finish the batch (nothing is paid twice)")}
	}
	if err != nil {
		return err
	}
	return summarize(ctx, w.Ledger(), batch, out)
}

func progressLine(c jobs.Counts) string {
	line := fmt.Sprintf("%d/%d archived · %d failed · %d generating · %d archiving · %d queued",
		c.Archived, c.Total, c.Failed, c.Submitted, c.Generated, c.Queued)
	if c.Held > 0 {
		line += fmt.Sprintf(" (%d held by the budget)", c.Held)
	}
	return line
}

// summarize prints the outcome and returns run's exit status.
func summarize(ctx context.Context, l *jobs.Ledger, batch string, out io.Writer) error {
	c, err := l.Counts(ctx, batch)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s: %d archived, %d failed of %d\n", batch, c.Archived, c.Failed, c.Total)
	lines, err := batchBudgetLines(ctx, l, batch)
	if err != nil {
		return err
	}
	for _, line := range lines {
		fmt.Fprintln(out, line)
	}
	if c.Failed == 0 {
		if c.Held > 0 {
			// Nothing more happens without a person: say so rather than wait for ever.
			return &exitError{code: exitFailed, err: fmt.Errorf("%d jobs held by the budget, not sent to Kie", c.Held)}
		}
		return nil
	}
	fails, err := l.Failures(ctx, batch)
	if err != nil {
		return err
	}
	sort.Slice(fails, func(a, b int) bool {
		x, y := fails[a].Spec, fails[b].Spec
		return cmp.Or(cmp.Compare(x.File, y.File), cmp.Compare(x.Line, y.Line), cmp.Compare(x.ID, y.ID)) < 0
	})
	for _, j := range fails {
		fmt.Fprintf(out, "  failed %s: %s: %s\n", failedJob(j), j.Reason, j.Error)
	}
	if c.Held > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("%d jobs failed, %d held by the budget", c.Failed, c.Held)}
	}
	return &exitError{code: exitFailed}
}

// failedJob names a failed job for a person: where it came from and what it asked for, then its id.
func failedJob(j *jobs.Job) string {
	where := ""
	if j.Spec.File != "" {
		where = fmt.Sprintf("%s:%d ", filepath.Base(j.Spec.File), j.Spec.Line)
	}
	return fmt.Sprintf("%s%q (job %s)", where, shorten(j.Spec.Prompt, 60), j.ID)
}

// shorten cuts s to at most n runes, marking the cut with "…".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}
