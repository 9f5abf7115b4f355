package worker

import (
	"context"
	"errors"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// The dispatcher feeds asynq's submit queue from the lines of waiting jobs (jobs/dispatch.go),
// keeping only a short backlog there: enough that no submit slot of any process idles while a
// token is free, few enough that a job of a higher class, or of a batch just loaded, is
// submitted within a few tokens. Every worker process runs one; the namespace's dispatch lock lets
// one at a time top the backlog up, so they need no leader and any of them may die.

// dispatchBacklog is the submit backlog the dispatcher keeps for a process with n submit slots:
// twice the local slots, and at least 4 so that the slots of a few other processes are fed
// between two top-ups. A job put in line waits behind at most this many tasks of its class and
// the slots already holding a job; a job of a higher class goes to its own queue, ahead of them.
func dispatchBacklog(n int) int { return max(4, 2*n) }

// dispatchEvery is how often a dispatcher tops the backlog up without being woken: the time the
// account's rate takes to spend half the backlog, within [10 ms, 1 s]. Unknown rate: 250 ms.
func dispatchEvery(backlog int, perSecond float64) time.Duration {
	if perSecond <= 0 {
		return 250 * time.Millisecond
	}
	d := time.Duration(float64(backlog) / 2 / perSecond * float64(time.Second))
	return min(max(d, 10*time.Millisecond), time.Second)
}

// wakeDispatch asks this process's dispatcher to top up now (a submit slot just freed).
func (w *Worker) wakeDispatch() {
	select {
	case w.dispatchWake <- struct{}{}:
	default:
	}
}

// runDispatch tops the submit backlog up until ctx ends.
func (w *Worker) runDispatch(ctx context.Context) {
	backlog := dispatchBacklog(w.o.SubmitWorkers)
	every := dispatchEvery(backlog, w.o.SubmitRate)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.dispatchWake:
		case <-t.C:
		}
		if _, err := w.Dispatch(ctx, backlog); err != nil && ctx.Err() == nil {
			w.log.Warn("dispatching waiting jobs", "err", err)
		}
		t.Reset(every)
	}
}

// Dispatch tops asynq's submit backlog up to backlog tasks from the jobs waiting in line (per
// class: a full backlog of bulk jobs never holds an interactive one back), unless another
// process is doing so; it reports how many jobs it dispatched. A job whose task cannot be
// queued goes back to the front of its line.
func (w *Worker) Dispatch(ctx context.Context, backlog int) (int, error) {
	release, ok, err := w.ledger.TryDispatchLock(ctx, w.id, 5*time.Second)
	if err != nil || !ok {
		return 0, err
	}
	defer release()
	// Jobs this process dispatched whose tasks could not be queued (Redis failed in between)
	// go first. They are still noted as dispatched, so if this process dies the sweeper finds
	// them.
	n, err := w.deliver(ctx, nil)
	if err != nil {
		return n, err
	}
	have, err := w.tasks.SubmitBacklog(ctx)
	if err != nil {
		return n, err
	}
	ds, err := w.ledger.DispatchUpTo(ctx, backlog, have)
	if err != nil {
		return n, err
	}
	m, err := w.deliver(ctx, ds)
	return n + m, err
}

// deliver queues the submit tasks of ds after those left over from an earlier failure; on an
// error it keeps the rest for the next call. It reports how many it queued.
func (w *Worker) deliver(ctx context.Context, ds []jobs.Dispatched) (int, error) {
	w.undeliveredMu.Lock()
	defer w.undeliveredMu.Unlock()
	todo := append(w.undelivered, ds...)
	w.undelivered = nil
	for i, d := range todo {
		if err := w.tasks.SubmitAs(ctx, d.Ref, d.Submissions, d.Priority); err != nil {
			w.undelivered = append(w.undelivered, todo[i:]...)
			return i, err
		}
	}
	return len(todo), nil
}

// sweepDispatches queues again the submit task of every job dispatched more than a sweep interval
// ago that is still queued (the process that dispatched it may have died before queuing it; a
// live task makes this a no-op), and forgets the dispatches of jobs that have moved on.
func (w *Worker) sweepDispatches(ctx context.Context, now time.Time) (int, error) {
	refs, err := w.ledger.StaleDispatches(ctx, now.Add(-w.o.SweepInterval), sweepBatch)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range refs {
		j, err := w.ledger.Get(ctx, r)
		if err != nil && !errors.Is(err, jobs.ErrNotFound) {
			return n, err
		}
		if j == nil || j.State != jobs.Queued {
			if err := w.ledger.Undispatch(ctx, r); err != nil {
				return n, err
			}
			continue
		}
		if err := w.tasks.SubmitAs(ctx, r, j.Submissions, j.Priority); err != nil {
			return n, err
		}
		if err := w.ledger.TouchDispatch(ctx, r); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// A submit slot holds its job while it waits for a token, so without more a job of a higher
// class would wait behind every job already holding a slot, in every process. Handlers of lower
// classes therefore look, about once a token's time, at what the classes above them have waiting:
// a higher-class task waiting for a slot makes them give theirs up (their task comes back after
// a token's time), and a higher-class handler waiting on the limiter makes them leave the next
// tokens to it. A higher class thus takes the next free token, in whichever process it waits.

// tokenSlice is how long a submit handler waits on the limiter between two looks: about one
// token's time at the account's rate, within [10 ms, 1 s]. Unknown rate: 250 ms.
func (w *Worker) tokenSlice() time.Duration {
	if w.o.SubmitRate <= 0 {
		return 250 * time.Millisecond
	}
	return min(max(time.Duration(float64(time.Second)/w.o.SubmitRate), 10*time.Millisecond), time.Second)
}

// waitForToken waits up to most for a generate token for a job of class p, leaving tokens to the
// classes above it. yield reports that the handler should give its slot up to a higher-class
// task; retry, when no token came, is when to come back.
func (w *Worker) waitForToken(ctx context.Context, p jobs.Priority, most time.Duration) (granted, yield bool, retry time.Duration, err error) {
	slice := w.tokenSlice()
	deadline := time.Now().Add(most)
	waiter := w.id + ":" + newToken()
	if p != jobs.Bulk {
		defer func() { _ = w.tasks.DoneWaitingForToken(context.WithoutCancel(ctx), p, waiter) }()
	}
	for {
		now := time.Now()
		left := deadline.Sub(now)
		if left <= 0 {
			return false, false, max(retry, slice), nil
		}
		if p != jobs.Interactive {
			pending, waiting, cerr := w.tasks.Contention(ctx, p, now)
			switch {
			case cerr != nil:
				// Priority is a courtesy; the limiter decides. Go on without it.
			case pending > w.yielding.Load():
				// Give the slot up, unless this process has already given up as many as there
				// are tasks waiting for one.
				w.yielding.Add(1)
				time.AfterFunc(slice, func() { w.yielding.Add(-1) })
				return false, true, slice, nil
			case pending > 0:
				if !sleepCtx(ctx, min(slice, left)) {
					return false, false, slice, ctx.Err()
				}
				continue
			case waiting > 0:
				if !sleepCtx(ctx, min(slice, left)) {
					return false, false, slice, ctx.Err()
				}
				continue
			}
		}
		if p != jobs.Bulk {
			_ = w.tasks.WaitingForToken(ctx, p, waiter, now, now.Add(3*slice))
		}
		granted, retry, err = w.o.SubmitLimiter.WaitAtMost(ctx, min(slice, left))
		if granted || err != nil {
			return granted, false, retry, err
		}
		if !sleepCtx(ctx, min(retry, slice, deadline.Sub(time.Now()))) {
			return false, false, slice, ctx.Err()
		}
	}
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
