package worker

import (
	"context"
	"fmt"

	"github.com/kontextq/kontextq/internal/journal"
	"github.com/kontextq/kontextq/jobs"
)

// Restored counts what RestoreJournal did to a batch's jobs, by the state each ended in:
// Archived (its image was already in the archive), Submitted (resumed at Kie, polled instead of
// paid again) and Failed (interrupted: its call may have reached Kie unanswered).
type Restored map[jobs.State]int

// Total is how many of the batch's jobs the journal knew to have been submitted before.
func (r Restored) Total() int { return r[jobs.Archived] + r[jobs.Submitted] + r[jobs.Failed] }

// RestoreJournal rebuilds, after a batch's file is loaded into a new in-memory ledger, what the
// ledger lost with the previous process, job by job with Restore. Call it before the worker runs.
func (w *Worker) RestoreJournal(ctx context.Context, j *journal.Journal, batch string) (Restored, error) {
	n := Restored{}
	for _, rec := range j.Records() {
		if rec.Ref.Batch != batch {
			continue
		}
		st, err := w.Restore(ctx, rec.Ref, Paid{
			TaskID: rec.TaskID, Submissions: rec.Submissions, SubmittedAt: rec.SubmittedAt, InFlight: rec.InFlight,
		})
		if err != nil {
			return n, fmt.Errorf("restoring %s from journal %s: %w", rec.Ref, j.Path(), err)
		}
		if err := w.chargeRestored(ctx, rec.Ref, rec.Submissions, rec.InFlight); err != nil {
			return n, err
		}
		n[st]++
	}
	return n, nil
}
