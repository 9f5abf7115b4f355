package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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

// startPolls hands the job's poll chain to a new token (if the chain is still owned by old) and
// schedules its next poll after delay.
func (w *Worker) startPolls(ctx context.Context, r jobs.Ref, taskID, old string, delay time.Duration) error {
	token := newToken()
	ok, err := w.ledger.ClaimPolls(ctx, r, taskID, old, token)
	if err != nil || !ok {
		return err
	}
	return w.tasks.Poll(ctx, r, token, delay)
}

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
