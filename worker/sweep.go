package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/jobs"
)

// Sweeps are an asynq periodic task: every worker process runs a Scheduler that enqueues one on
// the sweep queue every SweepInterval. asynq.Unique keeps at most one sweep queued however many
// processes schedule it, and a Redis lock taken by the handler lets at most one sweep run per
// interval; the others return at once. So N processes sweep as often as one, and the sweeps go
// on as long as any process lives.

// sweepLockKey is the key of the lock that spaces sweeps at least 9/10 of an interval apart.
func (w *Worker) sweepLockKey() string { return w.o.Namespace + ":sweep-lock" }

func (w *Worker) sweepOptions() []asynq.Option {
	return []asynq.Option{
		asynq.Queue(w.queues.Sweep),
		asynq.Unique(max(w.o.SweepInterval, time.Second)),
		asynq.MaxRetry(0), // a failed sweep is retried by the next interval's
		asynq.Timeout(max(w.o.SweepInterval, 5*time.Minute)),
	}
}

// startSweeps starts the process's sweep scheduler and asks for one sweep at once, so a worker
// that restarts after a crash does not wait an interval before re-queuing what the crash left.
func (w *Worker) startSweeps(ctx context.Context) (*asynq.Scheduler, error) {
	s := asynq.NewSchedulerFromRedisClient(w.o.Redis, &asynq.SchedulerOpts{
		Logger:   schedulerLogger{asynqLogger{w.log}},
		LogLevel: asynq.WarnLevel,
		PostEnqueueFunc: func(_ *asynq.TaskInfo, err error) {
			if err != nil && !errors.Is(err, asynq.ErrDuplicateTask) {
				w.log.Warn("scheduling a sweep failed", "err", err)
			}
		},
	})
	task := asynq.NewTask(jobs.TypeSweep, nil)
	// @every counts from the scheduler's start; sub-second intervals are not supported by cron.
	spec := "@every " + max(w.o.SweepInterval, time.Second).String()
	if _, err := s.Register(spec, task, w.sweepOptions()...); err != nil {
		return nil, fmt.Errorf("registering the periodic sweep: %w", err)
	}
	if err := s.Start(); err != nil {
		return nil, fmt.Errorf("starting the sweep scheduler: %w", err)
	}
	if _, err := w.client.EnqueueContext(ctx, task, w.sweepOptions()...); err != nil && !errors.Is(err, asynq.ErrDuplicateTask) && ctx.Err() == nil {
		w.log.Warn("queuing the first sweep failed; the scheduler queues the next", "err", err)
	}
	return s, nil
}

// schedulerLogger demotes the error asynq's Scheduler logs at every shutdown when it shares its
// Redis client, which is by design here ("redis connection is shared so the Client can't be
// closed through asynq").
type schedulerLogger struct{ asynqLogger }

func (l schedulerLogger) Error(args ...any) {
	if strings.Contains(fmt.Sprint(args...), "connection is shared") {
		l.Debug(args...)
		return
	}
	l.asynqLogger.Error(args...)
}

// handleSweep runs Sweep unless another process swept less than an interval ago. Errors are
// logged, not returned: the next interval's sweep is the retry.
func (w *Worker) handleSweep(ctx context.Context, _ *asynq.Task) error {
	ok, err := w.o.Redis.SetNX(ctx, w.sweepLockKey(), "1", w.o.SweepInterval*9/10).Result()
	if err != nil {
		w.log.Warn("sweep skipped: taking the sweep lock failed", "err", err)
		return nil
	}
	if !ok {
		return nil
	}
	if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
		w.log.Warn("sweep failed", "err", err)
	}
	return nil
}

// SweepReport says what one sweep did.
type SweepReport struct {
	Archives      int       // archive tasks (re)queued for generated jobs
	Checks        int       // silent submitted jobs checked
	Dispatches    int       // submit tasks queued again for jobs dispatched long ago and still queued
	SoonestExpiry time.Time // of any generated, unarchived result; zero when there is none
	NearExpiry    int       // generated, unarchived results expiring within ExpiryMargin (or past it)
}

// sweepBatch bounds the jobs one sweep looks at per index; the soonest expiries come first, so
// a backlog larger than this is still served in the order that matters.
const sweepBatch = 1000

// Sweep leaves nothing to chance: it re-enqueues the archive of every generated but unarchived job,
// soonest expiry first (a live task with the same id makes this a no-op), warns when results
// are close to expiry, checks every submitted job that has been silent past the poll limit, and
// queues the submit task of every job dispatched long ago that is still queued.
func (w *Worker) Sweep(ctx context.Context) error {
	rep, err := w.sweep(ctx)
	if err != nil {
		return err
	}
	w.o.Observer.Swept(rep)
	w.log.Debug("sweep", "archives", rep.Archives, "checks", rep.Checks, "near_expiry", rep.NearExpiry)
	return nil
}

func (w *Worker) sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	now := w.o.Now()
	refs, exps, err := w.ledger.Expiring(ctx, now.Add(100*365*24*time.Hour), sweepBatch)
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	if len(exps) > 0 {
		rep.SoonestExpiry = exps[0]
	}
	for i, exp := range exps {
		if exp.Sub(now) >= w.o.ExpiryMargin {
			break
		}
		rep.NearExpiry = i + 1
	}
	if rep.NearExpiry > 0 {
		in := rep.SoonestExpiry.Sub(now).Round(time.Second)
		w.log.Warn("unarchived results are close to expiry", "count", rep.NearExpiry, "soonest_job", refs[0].String(),
			"expires", rep.SoonestExpiry, "in", in, "margin", w.o.ExpiryMargin)
	}
	for _, r := range refs {
		j, err := w.ledger.Get(ctx, r)
		if err != nil || j.State != jobs.Generated {
			continue // archived or gone since the index was read
		}
		if err := w.queueArchive(ctx, j); err != nil {
			return rep, fmt.Errorf("sweep: %w", err)
		}
		rep.Archives++
	}
	silent, _, err := w.ledger.InFlight(ctx, now.Add(-w.o.PollTimeout), sweepBatch)
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	for _, r := range silent {
		if err := w.Check(ctx, r); err != nil {
			return rep, fmt.Errorf("sweep: checking %s: %w", r, err)
		}
		rep.Checks++
	}
	if rep.Dispatches, err = w.sweepDispatches(ctx, now); err != nil {
		return rep, fmt.Errorf("sweep: dispatched jobs: %w", err)
	}
	if pe, err := w.pause.get(ctx); err == nil && pe != nil && pe.Cause == CauseOutOfCredits {
		if c, err := w.o.Kie.Credits(ctx); err == nil && c > 0 {
			_ = w.pause.lift(ctx, CauseOutOfCredits)
			w.log.Info("credits are back; submissions resume", "credits", c)
		}
	}
	if err := w.sweepBudget(ctx); err != nil {
		w.log.Warn("sweep: releasing jobs held by the budget failed", "err", err)
	}
	return rep, nil
}
