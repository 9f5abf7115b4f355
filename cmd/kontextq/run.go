package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/jobs"
)

// batchFlags are the job-file flags of run and load.
type batchFlags struct {
	batch, format           string
	skipInvalid             bool
	model, ratio, outFormat string
}

func (b *batchFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&b.batch, "batch", "", "batch name (default: the file's name without extension); archive goes to <archive>/<batch>/")
	f.StringVar(&b.format, "format", "", "file format: jsonl, csv or text (default: by extension)")
	f.BoolVar(&b.skipInvalid, "skip-invalid", false, "enqueue the valid lines of a file with bad lines; the bad ones go to FILE.rejects.jsonl")
	f.StringVar(&b.model, "model", "", "model for lines that name none: flux-kontext-pro or flux-kontext-max")
	f.StringVar(&b.ratio, "aspect-ratio", "", "aspectRatio for lines that give none: 21:9 16:9 4:3 1:1 3:4 9:16")
	f.StringVar(&b.outFormat, "output-format", "", "outputFormat for lines that give none: jpeg or png")
}

func (b *batchFlags) options(path string) loadOptions {
	batch := b.batch
	if batch == "" {
		batch = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return loadOptions{Path: path, Format: b.format, Batch: batch, SkipInvalid: b.skipInvalid, Concurrency: 16,
		Defaults: jobs.Spec{Model: b.model, AspectRatio: b.ratio, OutputFormat: b.outFormat}}
}

func newRunCmd() *cobra.Command {
	var bf batchFlags
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Load a job file, work it in this process, and exit when every job is archived or failed",
		Long: `run loads FILE (JSONL, CSV or plain text), works the batch in-process with progress, and exits
when every job is archived or failed: 0 all archived, 1 some failed (each listed with its reason),
2 bad usage, configuration or input. Re-running the same command resumes; nothing is paid twice.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := cfg.RequireKieKey(); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			log := newLogger(cfg, cmd.ErrOrStderr())
			o := bf.options(args[0])
			if err := validBatch(o.Batch); err != nil {
				return usageErr(err)
			}
			rdb, err := openRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			store, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			w, _, err := newWorker(ctx, cfg, rdb, log, store)
			if err != nil {
				return err
			}
			defer w.Close()
			enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention})
			defer enq.Close()

			out := cmd.OutOrStdout()
			rep, err := loadFile(ctx, enq, o, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "batch %s: %d jobs in %s (%d new, %d known)", o.Batch, rep.Valid, o.Path, rep.Added, rep.Existing)
			if rep.Invalid > 0 {
				fmt.Fprintf(out, "; %d bad lines skipped, see %s", rep.Invalid, rep.RejectsPath)
			}
			fmt.Fprintf(out, "; archive %s\n", store.Location(o.Batch))

			wctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(wctx) }()
			err = waitBatch(ctx, w.Ledger(), o.Batch, out, 2*time.Second)
			stop()
			if werr := <-done; werr != nil && err == nil {
				err = werr
			}
			if err != nil {
				return err
			}
			return summarize(ctx, w.Ledger(), o.Batch, out)
		},
	}
	bf.register(cmd)
	return cmd
}

func validBatch(b string) error {
	s := jobs.Spec{Batch: b, Prompt: "x"}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("--batch %q: %v", b, err)
	}
	return nil
}

// waitBatch prints progress until the batch is finished or ctx ends.
func waitBatch(ctx context.Context, l *jobs.Ledger, batch string, out io.Writer, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	var last jobs.Counts
	for {
		c, err := l.Counts(ctx, batch)
		if err != nil {
			return err
		}
		if c != last {
			fmt.Fprintf(out, "%s  %s\n", time.Since(start).Round(time.Second), progressLine(c))
			last = c
		}
		if c.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return &exitError{code: exitFailed, err: errors.New("interrupted; run the same command again to finish the batch (nothing is paid twice)")}
		case <-t.C:
		}
	}
}

func progressLine(c jobs.Counts) string {
	return fmt.Sprintf("%d/%d archived · %d failed · %d generating · %d archiving · %d queued",
		c.Archived, c.Total, c.Failed, c.Submitted, c.Generated, c.Queued)
}

// summarize prints the outcome and returns run's exit status.
func summarize(ctx context.Context, l *jobs.Ledger, batch string, out io.Writer) error {
	c, err := l.Counts(ctx, batch)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s: %d archived, %d failed of %d\n", batch, c.Archived, c.Failed, c.Total)
	if c.Failed == 0 {
		return nil
	}
	fails, err := l.Failures(ctx, batch)
	if err != nil {
		return err
	}
	sort.Slice(fails, func(i, j int) bool { return fails[i].ID < fails[j].ID })
	for _, j := range fails {
		fmt.Fprintf(out, "  failed %s: %s: %s\n", j.ID, j.Reason, j.Error)
	}
	return &exitError{code: exitFailed}
}

var _ = os.Stdout
