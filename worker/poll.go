package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

const maxPollWait = 2 * time.Second

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pollBackstop is how much later than its time a poll's asynq task is due when a timer of the
// process runs the poll on time: asynq may run a task up to a second early (it keeps due times
// in whole seconds), and the timer's poll may wait maxPollWait for the poll budget, so the task
// comes after the timer's poll has moved the chain on, and is then a no-op.
const pollBackstop = maxPollWait + time.Second

// startPolls hands the job's poll chain to a new token (if the chain is still owned by old) and
// schedules its next poll after delay. In a running worker the poll is run by a timer of this
// process, on time to the millisecond; asynq keeps scheduled tasks by whole seconds, too coarse
// for polls timed to generations of a few seconds. The poll's asynq task is still queued, due
// pollBackstop later, so that a poll whose process died, or whose timer's poll failed, still
// happens.
func (w *Worker) startPolls(ctx context.Context, r jobs.Ref, taskID, old string, delay time.Duration) error {
	token := newToken()
	ok, err := w.ledger.ClaimPolls(ctx, r, taskID, old, token)
	if err != nil || !ok {
		return err
	}
	t := w.timers.Load()
	if t == nil || delay <= 0 {
		return w.tasks.Poll(ctx, r, token, delay)
	}
	if err := w.tasks.Poll(ctx, r, token, delay+pollBackstop); err != nil {
		return err
	}
	t.after(delay, func(ctx context.Context) { w.timedPoll(ctx, r, token) })
	return nil
}

// timedPoll is a timer's poll of link token of r's chain. Anything but a poll of the chain's
// current link is left to the link's asynq task, as is any failure.
func (w *Worker) timedPoll(ctx context.Context, r jobs.Ref, token string) {
	j, err := w.ledger.Get(ctx, r)
	if err != nil || j.State != jobs.Submitted || j.PollToken != token {
		return
	}
	if err := w.pollJob(ctx, j, jobs.PollPayload{Ref: r, Token: token}); err != nil && ctx.Err() == nil {
		w.log.Debug("timed poll failed; its task polls later", "job", r.String(), "err", err)
	}
}

// pollTimers run the polls of a running worker on time, at most concurrency at once.
type pollTimers struct {
	ctx context.Context // the worker's Run
	sem chan struct{}

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newPollTimers(ctx context.Context, concurrency int) *pollTimers {
	return &pollTimers{ctx: ctx, sem: make(chan struct{}, max(concurrency, 1))}
}

// after runs f after d, unless the worker stops first.
func (t *pollTimers) after(d time.Duration, f func(context.Context)) {
	time.AfterFunc(d, func() {
		t.mu.Lock()
		if t.closed || t.ctx.Err() != nil {
			t.mu.Unlock()
			return
		}
		t.wg.Add(1)
		t.mu.Unlock()
		defer t.wg.Done()
		select {
		case t.sem <- struct{}{}:
		case <-t.ctx.Done():
			return
		}
		defer func() { <-t.sem }()
		ctx, cancel := context.WithTimeout(t.ctx, pollTaskTimeout)
		defer cancel()
		f(ctx)
	})
}

// close stops the timers and waits for the polls under way; the tasks of the others poll later.
func (t *pollTimers) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}

// pollTaskTimeout bounds a timer's poll, as asynq's timeout bounds a poll task.
const pollTaskTimeout = time.Minute

// Check enqueues an immediate one-off poll of a submitted job (from a callback or the sweeper).
// Checks of one job are deduplicated while one is pending.
func (w *Worker) Check(ctx context.Context, r jobs.Ref) error {
	return w.tasks.Check(ctx, r)
}

func (w *Worker) handlePoll(ctx context.Context, t *asynq.Task) error {
	var p jobs.PollPayload
	j, err := w.taskJob(ctx, t, &p)
	if j == nil {
		return err
	}
	return w.pollJob(ctx, j, p)
}

// pollJob is one poll of job j by the poll task (or timer) p.
func (w *Worker) pollJob(ctx context.Context, j *jobs.Job, p jobs.PollPayload) error {
	switch j.State {
	case jobs.Generated:
		return w.queueArchive(ctx, j)
	case jobs.Queued:
		// A poll that sent the job back for a resubmission may have failed to put it in line
		// (recordFailure) and is now retried: put it there, or nothing will. A no-op when it
		// is waiting.
		_, err := w.ledger.PutInLine(ctx, true, j.Ref)
		return err
	case jobs.Submitted:
	default:
		return nil
	}
	if p.Token != "" && p.Token != j.PollToken {
		// A superseded chain. The chain that superseded it may have lost its task (claimed in
		// the ledger, then Redis failed before its poll was queued): queue the current chain's
		// poll, a no-op while it exists.
		if j.PollToken == "" {
			return nil
		}
		return w.tasks.Poll(ctx, j.Ref, j.PollToken, w.o.PollInterval)
	}
	probe, err := w.pause.admit(ctx, EndpointRecordInfo, maxPollWait)
	if err != nil {
		return err
	}
	granted, retry, err := w.o.PollLimiter.WaitAtMost(ctx, maxPollWait)
	if !granted {
		if probe {
			w.pause.release(ctx)
		}
		why := "waiting for the poll rate limit"
		if err != nil {
			why = "poll rate limiter unavailable: " + err.Error()
		}
		return &RateLimitedError{RetryAfter: max(retry, 100*time.Millisecond), Why: why}
	}
	rec, err := w.o.Kie.RecordInfo(ctx, j.TaskID)
	if err != nil {
		v, rerr := w.refused(ctx, EndpointRecordInfo, err, probe)
		if v.Action == RetryLater || v.Action == PauseAccount {
			return rerr
		}
		if v.Cause == CauseNotFound && w.o.Now().Sub(j.SubmittedAt) > w.o.PollTimeout {
			// Kie no longer knows the task, long after it took it: it will never finish. End the
			// job where a person sees it (retry --failed submits it again, a new paid task)
			// rather than check it every sweep forever.
			msg := fmt.Sprintf("Kie no longer knows task %s (submitted %s ago): %v", j.TaskID, w.o.Now().Sub(j.SubmittedAt).Round(time.Second), err)
			ok, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Submitted}, j.TaskID, jobs.GenerationFailed, msg)
			if ok {
				w.o.Observer.Failed(jobs.GenerationFailed)
				w.log.Warn("task unknown to Kie; job failed", "job", j.Ref.String(), "task", j.TaskID)
			}
			return ferr
		}
		_ = w.ledger.SetError(ctx, j.Ref, "poll: "+err.Error())
		return rerr
	}
	w.answered(ctx, EndpointRecordInfo, probe)
	switch rec.SuccessFlag {
	case kie.Succeeded:
		return w.recordSuccess(ctx, j, rec)
	case kie.CreateFailed, kie.GenerationFailed:
		return w.recordFailure(ctx, j, rec)
	}
	// Still generating.
	if p.Token == "" {
		return nil // a one-off check; the chain (or the sweeper) carries on
	}
	if w.o.Now().Sub(j.SubmittedAt) > w.o.PollTimeout {
		// Stop polling; the sweeper checks it at its own pace rather than lose it.
		_, err := w.ledger.ClaimPolls(ctx, j.Ref, j.TaskID, p.Token, "")
		w.log.Warn("task still generating past the poll limit; handed to the sweeper", "job", j.Ref.String(), "task", j.TaskID)
		return err
	}
	return w.startPolls(ctx, j.Ref, j.TaskID, p.Token, w.nextPoll(ctx, j))
}

func (w *Worker) recordSuccess(ctx context.Context, j *jobs.Job, rec *kie.Record) error {
	if rec.ResultImageURL == "" {
		return fmt.Errorf("task %s succeeded without a result URL", j.TaskID)
	}
	// The expiry counts from completion, but never from later than now: a clock-skewed or
	// missing completion time must not extend the deadline.
	from := rec.CompleteTime
	if from.IsZero() || from.After(w.o.Now()) {
		from = w.o.Now()
	}
	res := jobs.Result{
		ResultURL: rec.ResultImageURL, OriginURL: rec.OriginImageURL,
		CreateTime: rec.CreateTime, CompleteTime: rec.CompleteTime, ExpiresAt: from.Add(w.o.ResultTTL),
	}
	ok, err := w.ledger.RecordGenerated(ctx, j.Ref, j.TaskID, res)
	if err != nil || !ok {
		return err
	}
	w.o.Observer.Generated(w.o.Now().Sub(j.SubmittedAt))
	w.learn(ctx, j, rec.CreateTime, rec.CompleteTime)
	j.State, j.ResultURL, j.ExpiresAt = jobs.Generated, res.ResultURL, res.ExpiresAt
	return w.queueArchive(ctx, j)
}

func (w *Worker) recordFailure(ctx context.Context, j *jobs.Job, rec *kie.Record) error {
	why := fmt.Sprintf("Kie task %s: successFlag %d, errorCode %d: %s", j.TaskID, rec.SuccessFlag, rec.ErrorCode, rec.ErrorMessage)
	reason := jobs.Reason("")
	switch {
	case rec.ErrorCode == 400:
		reason = jobs.Rejected
	case j.Submissions > w.o.GenerationRetries:
		reason = jobs.GenerationFailed
	}
	if reason != "" {
		ok, err := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Submitted}, j.TaskID, reason, why)
		if ok {
			w.o.Observer.Failed(reason)
		}
		return err
	}
	ok, err := w.ledger.Requeue(ctx, j.Ref, j.TaskID, why)
	if err != nil || !ok {
		return err
	}
	w.log.Info("generation failed; submitting again", "job", j.Ref.String(), "submissions", j.Submissions, "why", why)
	// At the front of its batch's line: it had its turn, and its class still decides.
	_, err = w.ledger.PutInLine(ctx, true, j.Ref)
	return err
}
