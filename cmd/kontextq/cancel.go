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
is submitted or paid for. It takes the jobs out of line and removes the few already handed to the
submit queue, so nothing of the batch is left waiting anywhere.

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

// cancelBatch takes the batch's waiting jobs out of line, cancels its queued jobs in the ledger,
// and removes the submit tasks of those already dispatched to asynq, so nothing of the batch
// stays waiting anywhere.
func cancelBatch(ctx context.Context, l *jobs.Ledger, tasks *jobs.Tasks, batch string, out io.Writer) error {
	if _, err := l.DropWaiting(ctx, batch); err != nil {
		return fmt.Errorf("cancel %s: %w (running cancel again finishes it)", batch, err)
	}
	dispatched, err := l.DispatchedOf(ctx, batch)
	if err != nil {
		return fmt.Errorf("cancel %s: %w (running cancel again finishes it)", batch, err)
	}
	inAsynq := make(map[jobs.Ref]bool, len(dispatched))
	for _, r := range dispatched {
		inAsynq[r] = true
	}
	type cancelled struct {
		r jobs.Ref
		n int
	}
	var list []cancelled
	rep, err := l.CancelQueued(ctx, batch, "the batch was cancelled", func(r jobs.Ref, n int) error {
		if inAsynq[r] {
			list = append(list, cancelled{r, n})
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(out, "batch %s: %d queued jobs cancelled so far\n", batch, rep.Cancelled)
		return fmt.Errorf("cancel %s: %w (running cancel again finishes it)", batch, err)
	}
	var removed atomic.Int64
	// A task that stays is harmless: the worker that runs it finds the job cancelled and drops it.
	firstErr := pool.Each(ctx, 8, slices.Values(list), func(ctx context.Context, c cancelled) error {
		ok, err := tasks.RemoveSubmit(c.r, c.n)
		if ok {
			removed.Add(1)
			return l.Undispatch(ctx, c.r)
		}
		return err
	})
	fmt.Fprintf(out, "batch %s: %d queued jobs cancelled (%d submit tasks removed from the queue)\n", batch, rep.Cancelled, removed.Load())
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
