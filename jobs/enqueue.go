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
	// Priority is the class of the jobs enqueued (Normal by default); WithPriority overrides it
	// for one call.
	Priority Priority
}

// Enqueuer puts jobs into the ledger and in line for submission. It is what other Go services use
// to enqueue work; it is safe for concurrent use. Workers (kontextq worker, run or serve with
// workers) dispatch the jobs in line to asynq's submit queue shortly before a token is free for
// them; see Ledger.Dispatch.
type Enqueuer struct {
	ledger   *Ledger
	tasks    *Tasks
	priority Priority
}

// NewEnqueuer returns an Enqueuer on rdb. It does not close rdb.
func NewEnqueuer(rdb redis.UniversalClient, o EnqueuerOptions) *Enqueuer {
	l := NewLedger(rdb, LedgerOptions{Namespace: o.Namespace, Retention: o.Retention})
	if o.Priority == "" {
		o.Priority = Normal
	}
	return &Enqueuer{ledger: l, tasks: NewTasks(rdb, TasksOptions{Namespace: l.ns}), priority: o.Priority}
}

// Ledger is the Enqueuer's ledger.
func (e *Enqueuer) Ledger() *Ledger { return e.ledger }

// Tasks is the Enqueuer's task queue.
func (e *Enqueuer) Tasks() *Tasks { return e.tasks }

// Priority is the class the Enqueuer's jobs wait in unless a call says otherwise.
func (e *Enqueuer) Priority() Priority { return e.priority }

// Close releases the Enqueuer's queue clients (not the Redis client).
func (e *Enqueuer) Close() error { return e.tasks.Close() }

// Outcome says what Enqueue did.
type Outcome struct {
	Ref   Ref
	Added bool  // a new job was recorded and queued
	State State // the job's state when it already existed
}

// EnqueueOption changes one Enqueue call.
type EnqueueOption func(*enqueueCall)

type enqueueCall struct{ priority Priority }

// WithPriority enqueues in class p instead of the Enqueuer's.
func WithPriority(p Priority) EnqueueOption { return func(c *enqueueCall) { c.priority = p } }

// Enqueue validates s and queues it unless the batch already holds a job with its id. Without an
// explicit id, the id is derived from the request's content (see DeriveID), so enqueuing the
// same request twice adds one job; give explicit ids to have two identical requests mean two
// images. s.Batch is required.
//
// It is idempotent: a job recorded whose place in line was lost is put in line again.
func (e *Enqueuer) Enqueue(ctx context.Context, s Spec, opts ...EnqueueOption) (Outcome, error) {
	if s.ID == "" {
		s.ID = DeriveID(&s, 1)
	}
	if err := s.Validate(); err != nil {
		return Outcome{}, err
	}
	return e.EnqueueValid(ctx, &s, opts...)
}

// EnqueueValid is Enqueue for a spec already validated and given its id (by a Reader).
func (e *Enqueuer) EnqueueValid(ctx context.Context, s *Spec, opts ...EnqueueOption) (Outcome, error) {
	c := enqueueCall{priority: e.priority}
	for _, o := range opts {
		o(&c)
	}
	r := Ref{Batch: s.Batch, ID: s.ID}
	existing, _, err := e.ledger.Create(ctx, s, c.priority)
	if err != nil {
		return Outcome{Ref: r}, err
	}
	return Outcome{Ref: r, Added: existing == "", State: existing}, nil
}
