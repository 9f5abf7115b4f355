package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// A retried job gets a live submit task even when asynq still holds the archived task of its last
// attempt under the same id; a live task is left as it is; cancel removes a waiting one.
func TestTasksSubmitAndRemove(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	ns := env.Prefix + "ns"
	tasks := jobs.NewTasks(env.Client, jobs.TasksOptions{Namespace: ns})
	defer tasks.Close()
	insp := asynq.NewInspectorFromRedisClient(env.Client)
	q := tasks.Queues().Submit
	dead, live := jobs.Ref{Batch: "b", ID: "dead"}, jobs.Ref{Batch: "b", ID: "live"}
	for _, r := range []jobs.Ref{dead, live} {
		if err := tasks.Submit(ctx, r, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := insp.ArchiveTask(q, "submit:b/dead:1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []jobs.Ref{dead, live} {
		if err := tasks.Submit(ctx, r, 1); err != nil {
			t.Fatalf("queue %s again: %v", r, err)
		}
	}
	for _, id := range []string{"submit:b/dead:1", "submit:b/live:1"} {
		info, err := insp.GetTaskInfo(q, id)
		if err != nil || info.State != asynq.TaskStatePending {
			t.Errorf("%s: task %+v (%v), want pending", id, info, err)
		}
	}
	if qi, _ := insp.GetQueueInfo(q); qi.Size != 2 || qi.Archived != 0 {
		t.Errorf("queue %+v, want 2 pending tasks and no archived one", qi)
	}

	removed, err := tasks.RemoveSubmit(live, 1)
	if err != nil || !removed {
		t.Errorf("remove = %v, %v", removed, err)
	}
	if removed, err := tasks.RemoveSubmit(live, 1); err != nil || removed {
		t.Errorf("second remove = %v, %v; want nothing to remove", removed, err)
	}
}

// An archive task whose deadline passed while it waited can never run: asking for the job's
// archive again replaces it, and the new task runs without the stale deadline. A check of a job
// already waiting for one adds nothing.
func TestTasksReplaceDeadArchiveAndDeduplicateChecks(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	tasks := jobs.NewTasks(env.Client, jobs.TasksOptions{Namespace: env.Prefix + "ns", Now: clock})
	defer tasks.Close()
	insp := asynq.NewInspectorFromRedisClient(env.Client)
	q := tasks.Queues()
	r := jobs.Ref{Batch: "b", ID: "x"}

	expiry := now.Add(2 * time.Minute)
	if err := tasks.Archive(ctx, r, expiry); err != nil {
		t.Fatal(err)
	}
	info, err := insp.GetTaskInfo(q.Archive, "archive:b/x")
	if err != nil || !info.Deadline.Equal(expiry.Truncate(time.Second)) {
		t.Fatalf("archive task %+v (%v), want deadline %s", info, err, expiry)
	}
	// Still alive: asking again changes nothing.
	if err := tasks.Archive(ctx, r, expiry); err != nil {
		t.Fatal(err)
	}
	if info2, _ := insp.GetTaskInfo(q.Archive, "archive:b/x"); info2 == nil || !info2.Deadline.Equal(info.Deadline) {
		t.Fatalf("a live archive task was replaced: %+v", info2)
	}
	now = now.Add(3 * time.Minute) // the deadline has passed, the task never ran
	if err := tasks.Archive(ctx, r, expiry); err != nil {
		t.Fatal(err)
	}
	info, err = insp.GetTaskInfo(q.Archive, "archive:b/x")
	if err != nil || info.State != asynq.TaskStatePending || !info.Deadline.IsZero() {
		t.Errorf("after the deadline passed: task %+v (%v), want a pending task without a deadline", info, err)
	}

	for range 3 {
		if err := tasks.Check(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if ts, err := insp.ListPendingTasks(q.Poll); err != nil || len(ts) != 1 {
		t.Errorf("pending checks after three: %d (%v), want 1", len(ts), err)
	}
}
