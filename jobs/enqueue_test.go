package jobs_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// A queued job whose submit task asynq archived (its last attempt was cut off by a crash) is put
// in line again when its batch is loaded again, and dispatching it queues the task anew: that is
// the remedy the loader promises for a job whose task is missing. A live task is left alone.
func TestEnqueueAgainRevivesArchivedSubmitTask(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: env.Prefix + "ns", Priority: jobs.Bulk})
	defer enq.Close()
	insp := asynq.NewInspectorFromRedisClient(env.Client)
	defer insp.Close()
	q := jobs.QueuesFor(env.Prefix + "ns")
	spec := jobs.Spec{Batch: "b", ID: "one", Prompt: "a gull over a pier"}
	id := "submit:b/one:0"
	// dispatch does what a worker's dispatcher does.
	dispatch := func() int {
		t.Helper()
		ds, err := enq.Ledger().Dispatch(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if err := enq.Tasks().SubmitAs(ctx, d.Ref, d.Submissions, d.Priority); err != nil {
				t.Fatal(err)
			}
		}
		return len(ds)
	}

	if _, err := enq.Enqueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if n := dispatch(); n != 1 {
		t.Fatalf("dispatched %d jobs, want 1", n)
	}
	if err := insp.ArchiveTask(q.Submit, id); err != nil {
		t.Fatal(err)
	}
	out, err := enq.Enqueue(ctx, spec)
	if err != nil || out.Added || out.State != jobs.Queued {
		t.Fatalf("enqueue again: %+v, %v", out, err)
	}
	if n := dispatch(); n != 1 {
		t.Fatalf("after loading again, dispatched %d jobs, want 1", n)
	}
	info, err := insp.GetTaskInfo(q.Submit, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending {
		t.Errorf("after loading again the job's submit task is %s, want pending", info.State)
	}

	// A third load finds the task pending and changes nothing.
	if _, err := enq.Enqueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	dispatch()
	if n, err := insp.ListPendingTasks(q.Submit); err != nil || len(n) != 1 {
		t.Errorf("pending submit tasks after a third load: %d, %v; want 1", len(n), err)
	}
}
