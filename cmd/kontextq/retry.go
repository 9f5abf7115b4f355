package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/jobs"
)

func newRetryCmd() *cobra.Command {
	var failed, interrupted bool
	cmd := &cobra.Command{
		Use:   "retry BATCH --failed",
		Short: "Queue a batch's failed jobs again",
		Long: `retry --failed sends the failed jobs of BATCH back to the queue, each with a fresh submit task, for
the workers to submit again. Each one submitted is a new paid request. Cancelled jobs are failed
jobs too: retry --failed queues them again.

Jobs failed as "interrupted" are left alone unless --include-interrupted: their generate call was
cut off after it may have reached Kie, so Kie may have created — and billed — a task whose result
kontextq never learnt. Submitting them again may pay twice for one image; check your Kie account's
logs first if that matters.

retry prints what it did and is idempotent: a second run finds nothing more to retry.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !failed {
				return usageErr(errors.New("say which jobs to retry: --failed"))
			}
			return withBatchTasks(cmd, args[0], func(ctx context.Context, l *jobs.Ledger, tasks *jobs.Tasks) error {
				return retryFailed(ctx, l, args[0], interrupted, cmd.OutOrStdout())
			})
		},
	}
	cmd.Flags().BoolVar(&failed, "failed", false, "retry the failed jobs (required)")
	cmd.Flags().BoolVar(&interrupted, "include-interrupted", false, "also retry jobs whose submission was cut off and may have been billed")
	return cmd
}

func retryFailed(ctx context.Context, l *jobs.Ledger, batch string, interrupted bool, out io.Writer) error {
	include := func(r jobs.Reason) bool { return r != jobs.Interrupted || interrupted }
	// Back in line in the class each job was enqueued with, behind the jobs waiting there.
	rep, err := l.RetryFailed(ctx, batch, include, func(r jobs.Ref, _ int) error {
		_, err := l.PutInLine(ctx, false, r)
		return err
	})
	total := 0
	for _, n := range rep.Requeued {
		total += n
	}
	if total == 0 {
		fmt.Fprintf(out, "batch %s: no failed jobs to retry\n", batch)
	} else {
		fmt.Fprintf(out, "batch %s: %d failed jobs queued again (%s); workers submit them, and each submission is paid\n",
			batch, total, formatReasons(rep.Requeued))
	}
	if n := rep.Skipped[jobs.Interrupted]; n > 0 {
		fmt.Fprintf(out, "%d interrupted jobs left failed: Kie may have billed them already; --include-interrupted retries them too\n", n)
	}
	if err != nil {
		return fmt.Errorf("retry %s: %w (running retry again finishes the job; the jobs already queued again stay queued, "+
			"and loading the batch's file again queues any whose task is missing)", batch, err)
	}
	return nil
}

// withBatchTasks runs fn, for the batch operations (retry, cancel), on the ledger of a batch known
// to be in it and on the tasks of its namespace.
func withBatchTasks(cmd *cobra.Command, batch string, fn func(ctx context.Context, l *jobs.Ledger, tasks *jobs.Tasks) error) error {
	s, err := openSession(cmd, false)
	if err != nil {
		return err
	}
	defer s.Close()
	l, _, err := s.batchLedger(cmd.Context(), batch)
	if err != nil {
		return err
	}
	tasks := jobs.NewTasks(s.rdb, jobs.TasksOptions{Namespace: s.cfg.Namespace})
	defer tasks.Close()
	return fn(cmd.Context(), l, tasks)
}
