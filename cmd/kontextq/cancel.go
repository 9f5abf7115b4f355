package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/pool"
	"github.com/kontextq/kontextq/jobs"
)

func newCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel BATCH",
		Short: "Cancel a batch's queued jobs (jobs already at Kie finish and are archived)",
		Long: `cancel fails every queued job of BATCH with the reason "cancelled", so nothing more of the batch
is submitted or paid for. It removes the jobs' waiting submit tasks from the queue too when there
are at most 1000; a larger batch's tasks stay queued, and workers drop each one without calling
Kie when they reach it.

Jobs already submitted cannot be cancelled: Kie has no call for it, and they are billed already.
They finish and are archived as usual. A job whose generate call is under way at this moment counts
as submitted.

cancel prints what it did and is idempotent. "kontextq retry BATCH --failed" queues the cancelled
jobs again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBatchTasks(cmd, args[0], func(ctx context.Context, l *jobs.Ledger, tasks *jobs.Tasks) error {
				return cancelBatch(ctx, l, tasks, args[0], cmd.OutOrStdout())
			})
		},
	}
}

// maxTaskRemovals bounds how many waiting submit tasks cancel removes. asynq keeps a queue's
// pending tasks in a Redis list, so each removal scans the queue: removing every task of a large
// batch takes time proportional to the batch times the queue (docs/benchmarks.md, Cancelling,
// has the figure). Past the bound the tasks stay, and workers drop each one, without
// calling Kie, when they find its job cancelled.
const maxTaskRemovals = 1000

// cancelBatch cancels the queued jobs in the ledger, then removes their waiting submit tasks when
// there are few enough (see maxTaskRemovals).
func cancelBatch(ctx context.Context, l *jobs.Ledger, tasks *jobs.Tasks, batch string, out io.Writer) error {
	type cancelled struct {
		r jobs.Ref
		n int
	}
	var list []cancelled
	rep, err := l.CancelQueued(ctx, batch, "the batch was cancelled", func(r jobs.Ref, n int) error {
		if len(list) <= maxTaskRemovals {
			list = append(list, cancelled{r, n})
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(out, "batch %s: %d queued jobs cancelled so far\n", batch, rep.Cancelled)
		return fmt.Errorf("cancel %s: %w (running cancel again finishes it)", batch, err)
	}
	var removed atomic.Int64
	var firstErr error
	if len(list) <= maxTaskRemovals {
		// A task that stays is harmless: the worker that runs it finds the job cancelled and
		// drops it.
		firstErr = pool.Each(ctx, 8, slices.Values(list), func(_ context.Context, c cancelled) error {
			ok, err := tasks.RemoveSubmit(c.r, c.n)
			if ok {
				removed.Add(1)
			}
			return err
		})
		fmt.Fprintf(out, "batch %s: %d queued jobs cancelled (%d waiting submit tasks removed)\n", batch, rep.Cancelled, removed.Load())
	} else {
		fmt.Fprintf(out, "batch %s: %d queued jobs cancelled; their submit tasks stay queued, and workers drop each one "+
			"without calling Kie when they reach it\n", batch, rep.Cancelled)
	}
	if rep.InFlight > 0 {
		fmt.Fprintf(out, "%d jobs already at Kie cannot be cancelled (Kie has no cancel call; they are billed): they finish and are archived\n", rep.InFlight)
	}
	if rep.Finished > 0 {
		fmt.Fprintf(out, "%d jobs had ended before (archived or failed)\n", rep.Finished)
	}
	if firstErr != nil {
		fmt.Fprintf(out, "some submit tasks could not be removed (%v); workers drop them when they find their job cancelled\n", firstErr)
	}
	return nil
}
