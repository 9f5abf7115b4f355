package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// A job's asynq tasks have stable ids derived from the job, so that queuing work that is already
// queued is a no-op, however many loaders, retries, callbacks, sweeps and redeliveries ask for it.
// Each kind of task is defined once below: its id, queue and options side by side. Tasks is the
// one place that queues and removes them.

// SubmitMaxRetry bounds the counted failures (transient errors) of a submit task. Rate limiting
// and account pauses are not counted as failures, so they never use this budget up.
const SubmitMaxRetry = 50

const (
	submitTimeout = 2 * time.Minute
	pollMaxRetry  = 20
	pollTimeout   = time.Minute
	checkMaxRetry = 5
	// ArchiveMaxRetry and the worker's archive backoff (at most a minute) spend an archive task's
	// retries over about half an hour of outage (a full disk, a bucket down). When they run out
	// the sweeper queues the task again, so an outage of any length costs at most one sweep
	// interval after it ends.
	ArchiveMaxRetry = 30
	archiveTimeout  = 5 * time.Minute
)

// taskDef is one task of a job: what Tasks enqueues.
type taskDef struct {
	task  *asynq.Task
	queue string
	id    string
	opts  []asynq.Option // besides queue and id
}

func (d taskDef) options() []asynq.Option {
	return append([]asynq.Option{asynq.Queue(d.queue), asynq.TaskID(d.id)}, d.opts...)
}

// submitDef is the submit task of a job that has had submission paid submissions: a
// resubmission after a failed generation gets a new id, while enqueuing a job whose submit task
// is still pending or running is a no-op.
func submitDef(q Queues, r Ref, submission int) taskDef {
	return submitDefAs(q, r, submission, Bulk)
}

// submitDefAs is submitDef in the queue of class p.
func submitDefAs(q Queues, r Ref, submission int, p Priority) taskDef {
	return taskDef{
		task:  asynq.NewTask(TypeSubmit, EncodePayload(Payload{Ref: r})),
		queue: q.SubmitFor(p),
		id:    fmt.Sprintf("submit:%s:%d", r, submission),
		opts:  []asynq.Option{asynq.MaxRetry(SubmitMaxRetry), asynq.Timeout(submitTimeout)},
	}
}

// successorDef is an extra submit task of a job whose own task asynq is about to archive. It has
// an id of its own (the archived task keeps the job's usual one): a second live submit task of a
// job is harmless, as every submit checks the ledger first.
func successorDef(q Queues, r Ref, token string, delay time.Duration) taskDef {
	d := submitDef(q, r, 0)
	d.id = "submit:" + r.String() + ":next:" + token
	d.opts = append(d.opts, asynq.ProcessIn(delay))
	return d
}

// pollDef is the next poll of the poll chain token owns (see PollPayload).
func pollDef(q Queues, r Ref, token string, delay time.Duration) taskDef {
	return taskDef{
		task:  asynq.NewTask(TypePoll, EncodePayload(PollPayload{Ref: r, Token: token})),
		queue: q.Poll,
		id:    "poll:" + token,
		opts:  []asynq.Option{asynq.ProcessIn(delay), asynq.MaxRetry(pollMaxRetry), asynq.Timeout(pollTimeout)},
	}
}

// checkDef is a one-off poll of a job, one at a time per job.
func checkDef(q Queues, r Ref) taskDef {
	return taskDef{
		task:  asynq.NewTask(TypePoll, EncodePayload(PollPayload{Ref: r})),
		queue: q.Poll,
		id:    "check:" + r.String(),
		opts:  []asynq.Option{asynq.MaxRetry(checkMaxRetry), asynq.Timeout(pollTimeout)},
	}
}

// archiveDef is the archive task of a generated job. Its asynq deadline is the result's assumed
// expiry, so an attempt still running then is cut off; past that point a new task has no
// deadline, because the result may well outlive the assumption (Kie documents 14 days) and only
// the download can tell.
func archiveDef(q Queues, r Ref, expiresAt, now time.Time) taskDef {
	d := taskDef{
		task:  asynq.NewTask(TypeArchive, EncodePayload(Payload{Ref: r})),
		queue: q.Archive,
		id:    "archive:" + r.String(),
		opts:  []asynq.Option{asynq.MaxRetry(ArchiveMaxRetry), asynq.Timeout(archiveTimeout)},
	}
	if expiresAt.After(now.Add(time.Minute)) {
		d.opts = append(d.opts, asynq.Deadline(expiresAt))
	}
	return d
}

// TasksOptions configure Tasks.
type TasksOptions struct {
	Namespace string           // "kontextq" by default
	Now       func() time.Time // the clock that judges task deadlines (time.Now)
}

// Tasks queues and removes the asynq tasks of jobs by their stable ids. It is safe for concurrent
// use.
type Tasks struct {
	rdb    redis.UniversalClient
	client *asynq.Client
	insp   *asynq.Inspector
	queues Queues
	now    func() time.Time
}

// NewTasks returns the Tasks of a namespace on rdb. It does not close rdb.
func NewTasks(rdb redis.UniversalClient, o TasksOptions) *Tasks {
	if o.Namespace == "" {
		o.Namespace = "kontextq"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Tasks{
		rdb:    rdb,
		client: asynq.NewClientFromRedisClient(rdb),
		insp:   asynq.NewInspectorFromRedisClient(rdb),
		queues: QueuesFor(o.Namespace),
		now:    o.Now,
	}
}

// Queues are the queue names the tasks go to.
func (t *Tasks) Queues() Queues { return t.queues }

// Close releases the queue clients (not the Redis client).
func (t *Tasks) Close() error { return errors.Join(closeShared(t.client), closeShared(t.insp)) }

// closeShared closes an asynq client or inspector built on a caller's Redis client. asynq refuses
// to close a connection it shares, and says so with an error; that refusal is the expected outcome.
func closeShared(c interface{ Close() error }) error {
	if err := c.Close(); err != nil && !strings.Contains(err.Error(), "shared") {
		return err
	}
	return nil
}

// Submit queues the submit task of a queued job that has had submissions paid submissions, in the
// bulk submit queue.
func (t *Tasks) Submit(ctx context.Context, r Ref, submissions int) error {
	return t.SubmitAs(ctx, r, submissions, Bulk)
}

// SubmitAs is Submit in the submit queue of class p.
func (t *Tasks) SubmitAs(ctx context.Context, r Ref, submissions int, p Priority) error {
	if err := t.enqueue(ctx, submitDefAs(t.queues, r, submissions, p)); err != nil {
		return fmt.Errorf("queuing the submit of %s: %w", r, err)
	}
	return nil
}

// SubmitSuccessor queues, after delay, a new submit task for a job whose current one asynq is
// about to archive (out of retries). token makes its id unique.
func (t *Tasks) SubmitSuccessor(ctx context.Context, r Ref, token string, delay time.Duration) error {
	if err := t.enqueue(ctx, successorDef(t.queues, r, token, delay)); err != nil {
		return fmt.Errorf("queuing the next submit task of %s: %w", r, err)
	}
	return nil
}

// RemoveSubmit deletes a job's submit task if it is waiting. It reports whether one was deleted;
// a task already running is left to find its job changed.
func (t *Tasks) RemoveSubmit(r Ref, submissions int) (bool, error) {
	removed := false
	for _, p := range Priorities {
		ok, err := t.removeSubmit(submitDefAs(t.queues, r, submissions, p))
		if err != nil {
			return removed, err
		}
		removed = removed || ok
	}
	return removed, nil
}

func (t *Tasks) removeSubmit(d taskDef) (bool, error) {
	r := d.id
	err := t.insp.DeleteTask(d.queue, d.id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return false, nil
	}
	info, ierr := t.insp.GetTaskInfo(d.queue, d.id)
	if ierr == nil && info.State == asynq.TaskStateActive {
		return false, nil
	}
	return false, fmt.Errorf("removing submit task %s: %w", r, err)
}

// Poll schedules, after delay, the next poll of the job's poll chain owned by token.
func (t *Tasks) Poll(ctx context.Context, r Ref, token string, delay time.Duration) error {
	if err := t.enqueue(ctx, pollDef(t.queues, r, token, delay)); err != nil {
		return fmt.Errorf("scheduling poll of %s: %w", r, err)
	}
	return nil
}

// Check queues an immediate one-off poll of a submitted job (for a callback or the sweeper).
// Checks of one job are deduplicated while one is waiting.
func (t *Tasks) Check(ctx context.Context, r Ref) error {
	if err := t.enqueue(ctx, checkDef(t.queues, r)); err != nil {
		return fmt.Errorf("queuing a check of %s: %w", r, err)
	}
	return nil
}

// Archive queues the archive task of a generated job whose result is assumed to expire at
// expiresAt.
func (t *Tasks) Archive(ctx context.Context, r Ref, expiresAt time.Time) error {
	if err := t.enqueue(ctx, archiveDef(t.queues, r, expiresAt, t.now())); err != nil {
		return fmt.Errorf("queuing the archive of %s: %w", r, err)
	}
	return nil
}

// enqueue enqueues d unless a live task holds its id. A task that holds the id but will never run
// its handler again (see deadTask) would make the new one a silent no-op and leave the job
// waiting forever: it is deleted and d queued anew.
func (t *Tasks) enqueue(ctx context.Context, d taskDef) error {
	opts := d.options()
	_, err := t.client.EnqueueContext(ctx, d.task, opts...)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	info, err := t.insp.GetTaskInfo(d.queue, d.id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		// It ended between the two calls: the id is free now.
	case err != nil:
		return err
	case !deadTask(info, t.now()):
		return nil // running, waiting its turn, or retrying: it does the work
	default:
		if err := t.insp.DeleteTask(d.queue, d.id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("freeing task id %s: %w", d.id, err)
		}
	}
	if _, err := t.client.EnqueueContext(ctx, d.task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	return nil
}

// deadTask reports whether a task will never run its handler again: asynq archived it (out of
// retries), kept it completed, or its deadline passed, which makes every attempt fail before it
// starts. A running task is alive: it fails and retries on its own.
func deadTask(info *asynq.TaskInfo, now time.Time) bool {
	switch info.State {
	case asynq.TaskStateArchived, asynq.TaskStateCompleted:
		return true
	case asynq.TaskStatePending, asynq.TaskStateScheduled, asynq.TaskStateRetry:
		return !info.Deadline.IsZero() && !info.Deadline.After(now)
	}
	return false
}

// SubmitBacklog counts, class by class, the submit tasks asynq holds that no handler is running:
// waiting, waiting to retry, and scheduled. The dispatcher keeps it short (see Ledger.Dispatch). It reads asynq's
// own keys ("asynq:{<queue>}:pending", ":retry", ":scheduled" in asynq v0.26), one round trip.
func (t *Tasks) SubmitBacklog(ctx context.Context) (map[Priority]int64, error) {
	cmds := map[Priority][]*redis.IntCmd{}
	_, err := t.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, pr := range Priorities {
			p := "asynq:{" + t.queues.SubmitFor(pr) + "}:"
			cmds[pr] = []*redis.IntCmd{pl.LLen(ctx, p+"pending"), pl.ZCard(ctx, p+"retry"), pl.ZCard(ctx, p+"scheduled")}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the submit backlog: %w", err)
	}
	out := make(map[Priority]int64, len(cmds))
	for pr, cs := range cmds {
		for _, c := range cs {
			out[pr] += c.Val()
		}
	}
	return out, nil
}

// Contention reports what waits for a generate token in the classes above p: submit tasks
// waiting in their queues for a slot (pending), and submit handlers holding a slot and waiting
// for the rate limiter (waiting, registered with WaitingForToken). One round trip.
func (t *Tasks) Contention(ctx context.Context, p Priority, now time.Time) (pending, waiting int64, err error) {
	var cmds []*redis.IntCmd
	_, err = t.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, q := range Priorities {
			if q == p {
				break
			}
			cmds = append(cmds, pl.LLen(ctx, "asynq:{"+t.queues.SubmitFor(q)+"}:pending"),
				pl.ZCount(ctx, t.tokenWaitersKey(q), strconv.FormatInt(now.UnixMilli(), 10), "+inf"))
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reading the submit contention: %w", err)
	}
	for i := 0; i+1 < len(cmds); i += 2 {
		pending += cmds[i].Val()
		waiting += cmds[i+1].Val()
	}
	return pending, waiting, nil
}

// WaitingForToken registers (or renews, until until) a submit handler of class p, named by
// waiter, as waiting for a generate token; done unregisters it. Handlers of lower classes see it
// through Contention and leave the tokens to it.
func (t *Tasks) WaitingForToken(ctx context.Context, p Priority, waiter string, now, until time.Time) error {
	k := t.tokenWaitersKey(p)
	_, err := t.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.ZAdd(ctx, k, redis.Z{Score: float64(until.UnixMilli()), Member: waiter})
		pl.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
		pl.PExpire(ctx, k, time.Hour)
		return nil
	})
	return err
}

// DoneWaitingForToken unregisters a waiter registered with WaitingForToken.
func (t *Tasks) DoneWaitingForToken(ctx context.Context, p Priority, waiter string) error {
	return t.rdb.ZRem(ctx, t.tokenWaitersKey(p), waiter).Err()
}

func (t *Tasks) tokenWaitersKey(p Priority) string { return t.queues.SubmitFor(p) + ":token-waiters" }
