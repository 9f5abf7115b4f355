package jobs

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// SubmitTask is the submit task of a job after submission paid submissions, and its options
// (queue and stable id included), for callers that drive asynq themselves.
func SubmitTask(q Queues, r Ref, submission int) (*asynq.Task, []asynq.Option) {
	d := submitDef(q, r, submission)
	return d.task, d.options()
}

// EnqueuerOptions configure an Enqueuer.
type EnqueuerOptions struct {
	Namespace string        // "kontextq" by default; workers must use the same
	Retention time.Duration // ledger retention of finished jobs (default 7 days)
}

// Enqueuer puts jobs into the ledger and the submit queue. It is what other Go services use to
// enqueue work; it is safe for concurrent use.
type Enqueuer struct {
	ledger *Ledger
	tasks  *Tasks
}

// NewEnqueuer returns an Enqueuer on rdb. It does not close rdb.
func NewEnqueuer(rdb redis.UniversalClient, o EnqueuerOptions) *Enqueuer {
	l := NewLedger(rdb, LedgerOptions{Namespace: o.Namespace, Retention: o.Retention})
	return &Enqueuer{ledger: l, tasks: NewTasks(rdb, TasksOptions{Namespace: l.ns})}
}

// Ledger is the Enqueuer's ledger.
func (e *Enqueuer) Ledger() *Ledger { return e.ledger }

// Tasks is the Enqueuer's task queue.
func (e *Enqueuer) Tasks() *Tasks { return e.tasks }

// Close releases the Enqueuer's queue clients (not the Redis client).
func (e *Enqueuer) Close() error { return e.tasks.Close() }

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

// QueueSubmit queues the submit task of a queued job that has had submissions paid submissions
// (see Tasks.Submit): a live task with the same id makes it a no-op, a dead one is replaced.
func (e *Enqueuer) QueueSubmit(ctx context.Context, r Ref, submissions int) error {
	return e.tasks.Submit(ctx, r, submissions)
}
