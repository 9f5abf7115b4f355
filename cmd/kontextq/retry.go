package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
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
			return withBatchTasks(cmd, args[0], func(ctx context.Context, l *jobs.Ledger, tasks *submitTasks) error {
				return retryFailed(ctx, l, tasks, args[0], interrupted, cmd.OutOrStdout())
			})
		},
	}
	cmd.Flags().BoolVar(&failed, "failed", false, "retry the failed jobs (required)")
	cmd.Flags().BoolVar(&interrupted, "include-interrupted", false, "also retry jobs whose submission was cut off and may have been billed")
	return cmd
}

func retryFailed(ctx context.Context, l *jobs.Ledger, tasks *submitTasks, batch string, interrupted bool, out io.Writer) error {
	include := func(r jobs.Reason) bool { return r != jobs.Interrupted || interrupted }
	rep, err := l.RetryFailed(ctx, batch, include, func(r jobs.Ref, n int) error { return tasks.queue(ctx, r, n) })
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

// submitTasks queues and removes the submit tasks of jobs, for retry and cancel.
type submitTasks struct {
	client *asynq.Client
	insp   *asynq.Inspector
	queues jobs.Queues
}

// withBatchTasks runs fn, for the batch operations (retry, cancel), on the ledger of a batch known
// to be in it and on the submit tasks of its namespace.
func withBatchTasks(cmd *cobra.Command, batch string, fn func(ctx context.Context, l *jobs.Ledger, tasks *submitTasks) error) error {
	s, err := openSession(cmd, false)
	if err != nil {
		return err
	}
	defer s.Close()
	l, _, err := s.batchLedger(cmd.Context(), batch)
	if err != nil {
		return err
	}
	tasks := newSubmitTasks(s.rdb, s.cfg.Namespace)
	defer tasks.Close()
	return fn(cmd.Context(), l, tasks)
}

func newSubmitTasks(rdb redis.UniversalClient, ns string) *submitTasks {
	return &submitTasks{client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), queues: jobs.QueuesFor(ns)}
}

// Close releases the queue clients (not the Redis client).
func (s *submitTasks) Close() error { return errors.Join(s.client.Close(), s.insp.Close()) }

// taskID is the asynq id of a job's submit task after submissions paid submissions.
func (s *submitTasks) taskID(r jobs.Ref, submissions int) string {
	_, opts := jobs.SubmitTask(s.queues, r, submissions)
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			return o.Value().(string)
		}
	}
	panic("jobs.SubmitTask gives no task id")
}

// queue queues the submit task of a job the ledger holds queued. A task asynq archived or kept
// completed with the same id would make the new one a silent no-op, so it is deleted first; a
// live one (pending, scheduled, retrying, running) will find the job queued and submit it.
func (s *submitTasks) queue(ctx context.Context, r jobs.Ref, submissions int) error {
	t, opts := jobs.SubmitTask(s.queues, r, submissions)
	_, err := s.client.EnqueueContext(ctx, t, opts...)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		if err != nil {
			return fmt.Errorf("queueing %s: %w", r, err)
		}
		return nil
	}
	id := s.taskID(r, submissions)
	info, err := s.insp.GetTaskInfo(s.queues.Submit, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		// It ended between the two calls: the id is free now.
	case err != nil:
		return fmt.Errorf("queueing %s: %w", r, err)
	case info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
		return nil
	default:
		if err := s.insp.DeleteTask(s.queues.Submit, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("freeing task id %s: %w", id, err)
		}
	}
	if _, err := s.client.EnqueueContext(ctx, t, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("queueing %s: %w", r, err)
	}
	return nil
}

// remove deletes a job's submit task if it is waiting. It reports whether one was deleted; a task
// already running is left to find its job cancelled.
func (s *submitTasks) remove(r jobs.Ref, submissions int) (bool, error) {
	err := s.insp.DeleteTask(s.queues.Submit, s.taskID(r, submissions))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskNotFound):
		return false, nil
	}
	info, ierr := s.insp.GetTaskInfo(s.queues.Submit, s.taskID(r, submissions))
	if ierr == nil && info.State == asynq.TaskStateActive {
		return false, nil
	}
	return false, fmt.Errorf("removing the submit task of %s: %w", r, err)
}
