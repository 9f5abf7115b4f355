package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
)

const (
	// generateTimeout bounds one generate call. The call is not cancelled by a shutdown: once
	// sent, its answer must reach the ledger.
	generateTimeout = 60 * time.Second
	// submitLease is how long a submission marker protects a call in flight. Older than this, the
	// call that set it has certainly ended, so a marker still there means its process died after
	// sending.
	submitLease = generateTimeout + 30*time.Second
	// recordWindow is how long after the marker was set the task id of an answered call may
	// still be recorded: the rest of the lease, less a margin, so that no other attempt takes
	// the marker for an interrupted call while this one still tries.
	recordWindow = submitLease - 5*time.Second
	// maxLimiterWait bounds how long a submit holds its worker slot waiting for a token.
	maxLimiterWait = 5 * time.Second
	// uploadReuse is how long an uploaded input image is reused; Kie may delete uploads after 24 h.
	uploadReuse = time.Hour
)

func (w *Worker) handleSubmit(ctx context.Context, t *asynq.Task) error {
	var p jobs.Payload
	if err := jobs.DecodePayload(t.Payload(), &p); err != nil {
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	err := w.submitJob(ctx, p.Ref)
	defer w.wakeDispatch()
	if errors.Is(err, errHeld) {
		// The hold ended the job's dispatch with it (jobs.Ledger.Reserve); a release may have
		// dispatched it anew since, and that dispatch must not be forgotten with this task.
		return nil
	}
	if err == nil {
		// The task is done: the job has moved on (or was dropped), so its dispatch is over.
		if uerr := w.ledger.Undispatch(context.WithoutCancel(ctx), p.Ref); uerr != nil {
			w.log.Warn("forgetting a dispatch; the sweeper does", "job", p.Ref.String(), "err", uerr)
		}
		return nil
	}
	if !lastAttempt(ctx) {
		return err
	}
	// asynq archives the task after this attempt whatever the error, even one that isFailure
	// calls harmless (waiting for the rate limit, a pause). Nothing looks at a queued job whose
	// submit task is archived, so the job must end here or get a task of its own.
	if isFailure(err) {
		// Transient errors past every retry: end the job visibly. Not when a generate call may
		// be in flight (the marker): that is for the interrupted-submission path to judge.
		ok, ferr := w.ledger.FailUnsent(ctx, p.Ref, jobs.Errored, "submitting kept failing: "+err.Error())
		if ferr == nil && ok {
			w.o.Observer.Failed(jobs.Errored)
			return err
		}
	}
	if serr := w.queueSuccessor(ctx, t, p.Ref, err); serr != nil {
		w.log.Error("submit task gave up and its successor could not be queued; loading the batch's file again queues it",
			"job", p.Ref.String(), "err", serr)
	}
	return err
}

// queueSuccessor queues a new submit task for a job whose task asynq is about to archive, after
// the delay that err asks for. It has an id of its own (the archived task keeps the job's usual
// one): a second live submit task of a job is harmless, as every submit checks the ledger first.
func (w *Worker) queueSuccessor(ctx context.Context, t *asynq.Task, r jobs.Ref, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	maxN, _ := asynq.GetMaxRetry(ctx)
	return w.tasks.SubmitSuccessor(ctx, r, newToken(), taskRetryDelay(maxN, err, t))
}

func (w *Worker) submitJob(ctx context.Context, ref jobs.Ref) error {
	p := jobs.Payload{Ref: ref}
	j, err := w.ledger.Get(ctx, p.Ref)
	if errors.Is(err, jobs.ErrNotFound) {
		w.log.Warn("submit of a job the ledger does not hold; dropped", "job", p.Ref.String())
		return nil
	}
	if err != nil {
		return err
	}
	switch j.State {
	case jobs.Submitted:
		// A redelivery after the task id was recorded: make sure its polls run. The chain may
		// have been claimed and its poll lost (Redis failed in between): queueing the poll of
		// the current chain again is a no-op while it exists.
		if j.PollToken == "" {
			return w.startPolls(ctx, j.Ref, j.TaskID, "", w.firstPoll(ctx, j))
		}
		return w.tasks.Poll(ctx, j.Ref, j.PollToken, w.o.FirstPoll)
	case jobs.Generated:
		return w.queueArchive(ctx, j)
	case jobs.Queued:
	default:
		return nil
	}
	if !j.Submitting.IsZero() {
		// The marker was stamped with Redis's clock (see Ledger.MarkSubmitting): judge its age
		// by the same clock, so workers whose clocks disagree agree on whether a call is live.
		now, err := w.o.Redis.Time(ctx).Result()
		if err != nil {
			return fmt.Errorf("reading Redis time: %w", err)
		}
		age := now.Sub(j.Submitting)
		if age < submitLease {
			return &RateLimitedError{RetryAfter: submitLease - age, Why: "a submission of this job may be in flight"}
		}
		msg := "a submission was interrupted after it may have reached Kie (and been billed); not sent again. " +
			"`kontextq retry " + j.Batch + " --failed --include-interrupted` submits it anew"
		if _, err := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Queued}, "", jobs.Interrupted, msg); err != nil {
			return err
		}
		w.log.Error("submission interrupted; job failed rather than paid twice", "job", j.Ref.String())
		return nil
	}
	if done, err := w.alreadyArchived(ctx, j); done || err != nil {
		return err
	}
	res, err := w.reserve(ctx, j)
	if err != nil || res.Outcome == jobs.NotQueued {
		return err
	}
	probe, err := w.pause.admit(ctx, EndpointGenerate, maxLimiterWait)
	if err != nil {
		return err
	}
	called := false
	if probe {
		// A probe that never reaches Kie frees its lease for the next call.
		defer func() {
			if !called {
				w.pause.release(ctx)
			}
		}()
	}
	var granted, yield bool
	var retry time.Duration
	if probe {
		granted, retry, err = w.o.SubmitLimiter.WaitAtMost(ctx, maxLimiterWait)
	} else {
		granted, yield, retry, err = w.waitForToken(ctx, j.Priority, maxLimiterWait)
	}
	if err != nil && !granted {
		return &RateLimitedError{RetryAfter: max(retry, time.Second), Why: "rate limiter unavailable: " + err.Error()}
	}
	if yield {
		return &RateLimitedError{RetryAfter: retry, Why: "a job of a higher priority takes this slot"}
	}
	if !granted {
		return &RateLimitedError{RetryAfter: retry, Why: "waiting for the generate rate limit"}
	}
	input, uploadedAt, err := w.inputURL(ctx, j)
	if err != nil {
		return err
	}
	call, err := w.beginCall(ctx, j, res.Outcome == jobs.Measure)
	if err != nil {
		return err
	}
	marked := time.Now()
	ok, err := w.ledger.MarkSubmitting(ctx, j.Ref, uploadURLIfLocal(j, input), uploadedAt)
	if err != nil || !ok {
		w.endCall(ctx, call, false)
	}
	if err != nil {
		return err
	}
	if !ok {
		if cur, err := w.ledger.Get(ctx, j.Ref); err == nil && cur.State != jobs.Queued {
			return nil // cancelled, or submitted by another attempt, while this one waited for its token
		}
		return &RateLimitedError{RetryAfter: submitLease, Why: "another submission of this job is in flight"}
	}
	called = true
	return w.submit(ctx, j, input, marked, probe, call)
}

// submit sends the generate call and records its outcome. It runs detached from the handler's
// cancellation: a call cut off halfway would leave Kie's answer — and a paid task — unknown.
// marked is when the submission marker was set; probe, whether the call is the account pause's
// probe; call, the call as the budget admitted it.
func (w *Worker) submit(ctx context.Context, j *jobs.Job, input string, marked time.Time, probe bool, call *paidCall) error {
	w.submits.Add(1)
	defer w.submits.Done()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), generateTimeout)
	defer cancel()

	if w.o.Journal != nil {
		if err := w.o.Journal.Submitting(j.Ref); err != nil {
			// Without the journal a crash could pay twice; wait for it (a full disk) without
			// using the job's retries up.
			_ = w.ledger.ClearSubmitting(cctx, j.Ref, "journal: "+err.Error())
			w.endCall(cctx, call, false)
			w.log.Error("journal not writable; submissions wait", "err", err)
			if probe {
				w.pause.release(ctx)
			}
			return &RateLimitedError{RetryAfter: 30 * time.Second, Why: "journal not writable", Err: err}
		}
	}
	req := j.Spec.Request(input, w.o.CallbackURL)
	taskID, err := w.o.Kie.Generate(cctx, req)
	// The outcome is recorded within the marker's lease, not within what the generate call left
	// of its own timeout: a call that timed out has spent all of it.
	rctx, rcancel := context.WithDeadline(context.WithoutCancel(ctx), marked.Add(recordWindow))
	defer rcancel()
	w.endCall(rctx, call, err == nil)
	if err != nil {
		return w.submitFailed(rctx, j, err, probe)
	}
	w.answered(rctx, EndpointGenerate, probe)
	w.o.Observer.Submitted()
	if w.o.Journal != nil {
		if jerr := w.o.Journal.Submitted(j.Ref, taskID); jerr != nil {
			w.log.Error("journal write failed", "job", j.Ref.String(), "task", taskID, "err", jerr)
		}
	}
	// The task is paid for: keep trying to record its id through a Redis outage for as long as
	// the marker keeps other attempts off the job.
	var recErr error
record:
	for try, wait := 1, 100*time.Millisecond; ; try, wait = try+1, min(2*wait, 2*time.Second) {
		var ok bool
		ok, recErr = w.ledger.RecordSubmitted(rctx, j.Ref, taskID)
		if recErr == nil {
			if !ok {
				w.log.Error("submitted job changed state meanwhile", "job", j.Ref.String(), "task", taskID)
				return nil
			}
			break
		}
		w.log.Warn("recording task id failed", "job", j.Ref.String(), "task", taskID, "try", try, "err", recErr)
		select {
		case <-rctx.Done():
			break record
		case <-time.After(wait):
		}
	}
	if recErr != nil {
		// The marker stays: the next attempt fails the job as interrupted instead of paying again.
		w.log.Error("task id could not be recorded; the job will not be resubmitted", "job", j.Ref.String(), "task", taskID, "err", recErr)
		w.endCall(rctx, call, false)
		return recErr
	}
	if call.Measuring {
		w.measured(rctx, j, call)
	}
	w.log.Debug("submitted", "job", j.Ref.String(), "task", taskID)
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer pcancel()
	return w.startPolls(pctx, j.Ref, taskID, "", w.firstPoll(pctx, j))
}

// submitFailed handles a generate call that did not return a task id.
func (w *Worker) submitFailed(ctx context.Context, j *jobs.Job, err error, probe bool) error {
	if !notSent(err) {
		// The request may have reached Kie and created a task we cannot see. Paying twice is
		// worse than asking the user to retry.
		msg := fmt.Sprintf("generate call cut off after it was sent (%v); Kie may have created and billed a task. "+
			"`kontextq retry %s --failed --include-interrupted` submits it anew", err, j.Batch)
		ok, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Queued}, "", jobs.Interrupted, msg)
		w.log.Error("submission outcome unknown; job failed rather than paid twice", "job", j.Ref.String(), "err", err)
		if ok {
			w.o.Observer.Failed(jobs.Interrupted)
		}
		return ferr
	}
	w.journalUnsent(j.Ref)
	if cerr := w.ledger.ClearSubmitting(ctx, j.Ref, err.Error()); cerr != nil {
		return cerr
	}
	// Nothing was billed: the reservation goes back, whether the job is given up or retried.
	defer w.giveBack(ctx, j.Ref)
	v, rerr := w.refused(ctx, EndpointGenerate, err, probe)
	if v.Action == GiveUp {
		if ok, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Queued}, "", jobs.Rejected, err.Error()); ferr != nil || !ok {
			return ferr
		}
		w.o.Observer.Failed(jobs.Rejected)
		return nil
	}
	return rerr
}

// alreadyArchived handles a queued job whose image is in the archive already (the ledger forgot
// it after its retention and the file was loaded again): it is recorded archived, not paid twice.
func (w *Worker) alreadyArchived(ctx context.Context, j *jobs.Job) (bool, error) {
	sc, err := archive.ReadSidecar(ctx, w.o.Store, j.Batch, j.ID)
	if errors.Is(err, archive.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking the archive for %s: %w", j.Ref, err)
	}
	key := archive.ImageKey(j.Batch, sc.FileName(), sc.Format)
	info, err := w.o.Store.Stat(ctx, key)
	if err != nil || info.Size != sc.Bytes {
		return false, nil // a sidecar without its image: generate it again
	}
	_, err = w.ledger.RecordFoundArchived(ctx, j.Ref, sc.TaskID,
		jobs.ArchiveRecord{Location: w.o.Store.Location(key), SHA256: sc.SHA256, Bytes: sc.Bytes, At: sc.ArchivedAt})
	if err == nil {
		w.log.Debug("already archived; not submitted again", "job", j.Ref.String())
	}
	return true, err
}

// inputURL is the inputImage to send: a URL as given, or a fresh upload of a local file.
func (w *Worker) inputURL(ctx context.Context, j *jobs.Job) (string, time.Time, error) {
	in := j.Spec.InputImage
	if in == "" || strings.HasPrefix(in, "http://") || strings.HasPrefix(in, "https://") {
		return in, time.Time{}, nil
	}
	if j.UploadURL != "" && w.o.Now().Sub(j.UploadedAt) < uploadReuse {
		return j.UploadURL, j.UploadedAt, nil
	}
	granted, retry, err := w.o.TransferLimiter.WaitAtMost(ctx, maxLimiterWait)
	if !granted {
		if err != nil {
			return "", time.Time{}, err
		}
		return "", time.Time{}, &RateLimitedError{RetryAfter: retry, Why: "waiting for the transfer rate limit"}
	}
	f, err := os.Open(in)
	if err != nil {
		msg := fmt.Sprintf("inputImage %s: %v", in, err)
		if _, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Queued}, "", jobs.Rejected, msg); ferr != nil {
			// Not SkipRetry: the job is still queued, and only this task will end it.
			return "", time.Time{}, ferr
		}
		return "", time.Time{}, fmt.Errorf("%w: %s", asynq.SkipRetry, msg)
	}
	defer f.Close()
	up, err := w.o.Kie.UploadStream(ctx, f, j.ID+filepath.Ext(in), "kontextq/"+j.Batch)
	if err != nil {
		v, rerr := w.refused(ctx, EndpointUpload, err, false)
		if v.Action == GiveUp {
			msg := fmt.Sprintf("inputImage %s: upload refused: %v", in, err)
			if _, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Queued}, "", jobs.Rejected, msg); ferr != nil {
				return "", time.Time{}, ferr
			}
			w.o.Observer.Failed(jobs.Rejected)
			return "", time.Time{}, fmt.Errorf("%w: %s", asynq.SkipRetry, msg)
		}
		return "", time.Time{}, fmt.Errorf("uploading %s: %w", in, rerr)
	}
	return up.DownloadURL, w.o.Now(), nil
}

func uploadURLIfLocal(j *jobs.Job, input string) string {
	if input != j.Spec.InputImage {
		return input
	}
	return ""
}
