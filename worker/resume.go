package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// UnsentJournal is a Journal that is also told when an announced generate call certainly created
// no task (Kie refused it), so that a restart does not take that job for one whose call may have
// reached Kie.
type UnsentJournal interface {
	Journal
	// Unsent records that the call announced for r created no task.
	Unsent(r jobs.Ref) error
}

// journalUnsent tells the journal, if it listens, that a submission of r created no task. A
// failure only makes a restart more cautious (the job is failed as interrupted rather than
// submitted again), so it is logged, not returned.
func (w *Worker) journalUnsent(r jobs.Ref) {
	uj, ok := w.o.Journal.(UnsentJournal)
	if !ok {
		return
	}
	if err := uj.Unsent(r); err != nil {
		w.log.Warn("journal write failed", "job", r.String(), "err", err)
	}
}

// Paid is what a durable record outside Redis (a Journal) knows of a job's submissions.
type Paid struct {
	// TaskID is Kie's task for the latest answered submission ("" if none was answered).
	TaskID string
	// Submissions counts generate calls Kie answered with a task.
	Submissions int
	// SubmittedAt is when the latest task id was recorded.
	SubmittedAt time.Time
	// InFlight: a later generate call was announced and its outcome never recorded; Kie may hold
	// (and have billed) a task for it.
	InFlight bool
}

// Restore brings a queued job up to date with what a journal knows, for a ledger that lost its
// state (an in-memory Redis that died with its process, then the same file loaded again):
//
//   - a job whose image is in the archive is recorded archived;
//   - a job with a call that may have reached Kie unanswered is failed as interrupted, never
//     submitted again;
//   - a job with a task id moves to submitted with that task (its paid submissions counted) and
//     is polled at once.
//
// A job that is not queued is only resumed (see Resume); a job the ledger does not hold is
// skipped. It reports the job's state afterwards ("" when skipped). Call it before the worker
// runs, so no submit task of the job can start meanwhile.
func (w *Worker) Restore(ctx context.Context, r jobs.Ref, p Paid) (jobs.State, error) {
	j, err := w.ledger.Get(ctx, r)
	if errors.Is(err, jobs.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if j.State != jobs.Queued || (p.TaskID == "" && !p.InFlight) {
		return j.State, w.Resume(ctx, r)
	}
	if done, err := w.alreadyArchived(ctx, j); err != nil || done {
		return jobs.Archived, err
	}
	if p.InFlight {
		msg := "a submission was interrupted (the process died) after it may have reached Kie (and been billed); not sent again. " +
			"`kontextq retry " + j.Batch + " --failed --include-interrupted` submits it anew"
		if _, err := w.ledger.Fail(ctx, r, []jobs.State{jobs.Queued}, "", jobs.Interrupted, msg); err != nil {
			return "", err
		}
		w.o.Observer.Failed(jobs.Interrupted)
		return jobs.Failed, nil
	}
	at := p.SubmittedAt
	if at.IsZero() {
		at = w.o.Now()
	}
	ok, before, err := w.ledger.RestoreSubmitted(ctx, r, p.TaskID, p.Submissions, at)
	if err != nil {
		return "", fmt.Errorf("restoring %s: %w", r, err)
	}
	if !ok {
		return before, nil
	}
	if err := w.startPolls(ctx, r, p.TaskID, "", 0); err != nil {
		return jobs.Submitted, err
	}
	return jobs.Submitted, nil
}

// Resume makes sure a job's next step is scheduled, whatever its state: a queued job's place in
// line (at the front: it had its turn), a submitted job's poll chain (a new chain takes over from one that may have been lost),
// a generated job's archive task. Finished jobs need nothing. Every step is idempotent, so
// resuming a job whose work is already queued costs at most one redundant poll.
func (w *Worker) Resume(ctx context.Context, r jobs.Ref) error {
	j, err := w.ledger.Get(ctx, r)
	if err != nil {
		return err
	}
	switch j.State {
	case jobs.Queued:
		_, err := w.ledger.PutInLine(ctx, true, r)
		return err
	case jobs.Submitted:
		return w.startPolls(ctx, r, j.TaskID, j.PollToken, 0)
	case jobs.Generated:
		return w.queueArchive(ctx, j)
	}
	return nil
}
