package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// SubmitMaxRetry bounds the counted failures (transient errors) of a submit task. Rate limiting
// and account pauses are not counted as failures, so they never use this budget up.
const SubmitMaxRetry = 50

// SubmitTask is the submit task of a job and its options. The task id is derived from the job and
// the number of paid submissions it has had, so enqueuing a job whose submit task is still
// pending or running is a no-op, while a resubmission after a failed generation gets a new task.
func SubmitTask(q Queues, r Ref, submission int) (*asynq.Task, []asynq.Option) {
	return asynq.NewTask(TypeSubmit, EncodePayload(Payload{Ref: r})), []asynq.Option{
		asynq.Queue(q.Submit),
		asynq.TaskID(submitTaskID(r, submission)),
		asynq.MaxRetry(SubmitMaxRetry),
		asynq.Timeout(2 * time.Minute),
	}
}

func submitTaskID(r Ref, submission int) string { return fmt.Sprintf("submit:%s:%d", r, submission) }

// EnqueuerOptions configure an Enqueuer.
type EnqueuerOptions struct {
	Namespace string        // "kontextq" by default; workers must use the same
	Retention time.Duration // ledger retention of finished jobs (default 7 days)
}

// Enqueuer puts jobs into the ledger and the submit queue. It is what other Go services use to
// enqueue work; it is safe for concurrent use.
type Enqueuer struct {
	ledger *Ledger
	client *asynq.Client
	insp   *asynq.Inspector
	queues Queues
}

// NewEnqueuer returns an Enqueuer on rdb. It does not close rdb.
func NewEnqueuer(rdb redis.UniversalClient, o EnqueuerOptions) *Enqueuer {
	l := NewLedger(rdb, LedgerOptions{Namespace: o.Namespace, Retention: o.Retention})
	return &Enqueuer{ledger: l, client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), queues: QueuesFor(l.ns)}
}

// Ledger is the Enqueuer's ledger.
func (e *Enqueuer) Ledger() *Ledger { return e.ledger }

// Close releases the Enqueuer's queue clients (not the Redis client).
func (e *Enqueuer) Close() error { return errors.Join(closeShared(e.client), closeShared(e.insp)) }

// closeShared closes an asynq client or inspector built on a caller's Redis client. asynq refuses
// to close a connection it shares, and says so with an error; that refusal is the expected outcome.
func closeShared(c interface{ Close() error }) error {
	if err := c.Close(); err != nil && !strings.Contains(err.Error(), "shared") {
		return err
	}
	return nil
}

// Outcome says what Enqueue did.
type Outcome struct {
	Ref   Ref
	Added bool  // a new job was recorded and queued
	State State // the job's state when it already existed
}

// Enqueue validates s and queues it unless the batch already holds a job with its id. Without an
// explicit id, the id is derived from the request's content (see DeriveID), so enqueuing the
// same request twice adds one job; give explicit ids to have two identical requests mean two
// images. s.Batch is required.
//
// It is idempotent: a job recorded but whose task was lost (a crash between the two writes) is
// queued again.
func (e *Enqueuer) Enqueue(ctx context.Context, s Spec) (Outcome, error) {
	if s.ID == "" {
		s.ID = DeriveID(&s, 1)
	}
	if err := s.Validate(); err != nil {
		return Outcome{}, err
	}
	return e.enqueueValid(ctx, &s)
}

// EnqueueValid is Enqueue for a spec already validated and given its id (by a Reader).
func (e *Enqueuer) EnqueueValid(ctx context.Context, s *Spec) (Outcome, error) {
	return e.enqueueValid(ctx, s)
}

func (e *Enqueuer) enqueueValid(ctx context.Context, s *Spec) (Outcome, error) {
	r := Ref{Batch: s.Batch, ID: s.ID}
	existing, n, err := e.ledger.Create(ctx, s)
	if err != nil {
		return Outcome{Ref: r}, err
	}
	out := Outcome{Ref: r, Added: existing == "", State: existing}
	if existing != "" && existing != Queued {
		return out, nil
	}
	if err := e.QueueSubmit(ctx, r, n); err != nil {
		return out, err
	}
	return out, nil
}

// QueueSubmit queues the submit task of a queued job that has had submissions paid submissions.
// A live task with the same id (pending, scheduled, retrying, running) makes it a no-op. A task
// asynq archived (or kept completed) with that id will never run again, yet would make the new
// one a silent no-op and leave the job queued forever: it is deleted and the task queued anew.
func (e *Enqueuer) QueueSubmit(ctx context.Context, r Ref, submissions int) error {
	t, opts := SubmitTask(e.queues, r, submissions)
	_, err := e.client.EnqueueContext(ctx, t, opts...)
	if err == nil {
		return nil
	}
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s: %w", r, err)
	}
	id := submitTaskID(r, submissions)
	info, err := e.insp.GetTaskInfo(e.queues.Submit, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		// It ended between the two calls: the id is free now.
	case err != nil:
		return fmt.Errorf("enqueue %s: %w", r, err)
	case info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
		return nil
	default:
		if err := e.insp.DeleteTask(e.queues.Submit, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("enqueue %s: freeing task id %s: %w", r, id, err)
		}
	}
	if _, err := e.client.EnqueueContext(ctx, t, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s: %w", r, err)
	}
	return nil
}
