package worker_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/worker"
)

// A task Kie no longer knows (404 from record-info) past the poll limit ends its job failed, where
// a person sees it, instead of being checked every sweep forever; before the limit it is retried.
func TestTaskUnknownToKieEndsTheJob(t *testing.T) {
	for _, c := range []struct {
		name        string
		pollTimeout time.Duration
		wantFailed  bool
	}{
		{"within the poll limit", time.Hour, false},
		{"past the poll limit", time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var later atomic.Int64 // how far the worker's clock has moved past the submission
			now := func() time.Time { return time.Now().Add(time.Duration(later.Load())) }
			b := setup(t, setupOpts{sim: kiesim.Options{GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second},
				worker: worker.Options{PollTimeout: c.pollTimeout, Now: now}})
			ctx := context.Background()
			ref := jobs.Ref{Batch: "ghosts", ID: "g1"}
			b.enqueue(t, jobs.Spec{Batch: ref.Batch, ID: ref.ID, Prompt: "a ship in a bottle"})
			if ok, err := b.ledger.RecordSubmitted(ctx, ref, "task-kie-never-had"); err != nil || !ok {
				t.Fatalf("RecordSubmitted: %v %v", ok, err)
			}
			later.Store(int64(time.Second))
			err := b.w.Handler().ProcessTask(ctx, asynq.NewTask(jobs.TypePoll, jobs.EncodePayload(jobs.PollPayload{Ref: ref})))
			j, gerr := b.ledger.Get(ctx, ref)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if c.wantFailed {
				if err != nil || j.State != jobs.Failed || j.Reason != jobs.GenerationFailed || !strings.Contains(j.Error, "no longer knows") {
					t.Fatalf("poll returned %v; job %s (%s): %s", err, j.State, j.Reason, j.Error)
				}
				return
			}
			if err == nil || j.State != jobs.Submitted {
				t.Fatalf("poll returned %v and left the job %s; want an error to retry and the job still submitted", err, j.State)
			}
		})
	}
}
