package main

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// A retried job gets a live submit task even when asynq still holds the archived task of its last
// attempt under the same id; a live task is left as it is; cancel removes a waiting one.
func TestSubmitTasksQueueAndRemove(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	ns := env.Prefix + "ns"
	tasks := newSubmitTasks(env.Client, ns)
	defer tasks.Close()
	q := jobs.QueuesFor(ns).Submit
	dead, live := jobs.Ref{Batch: "b", ID: "dead"}, jobs.Ref{Batch: "b", ID: "live"}
	for _, r := range []jobs.Ref{dead, live} {
		if err := tasks.queue(ctx, r, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := tasks.insp.ArchiveTask(q, tasks.taskID(dead, 1)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []jobs.Ref{dead, live} {
		if err := tasks.queue(ctx, r, 1); err != nil {
			t.Fatalf("queue %s again: %v", r, err)
		}
	}
	for _, r := range []jobs.Ref{dead, live} {
		info, err := tasks.insp.GetTaskInfo(q, tasks.taskID(r, 1))
		if err != nil || info.State != asynq.TaskStatePending {
			t.Errorf("%s: task %+v (%v), want pending", r, info, err)
		}
	}
	if qi, _ := tasks.insp.GetQueueInfo(q); qi.Size != 2 || qi.Archived != 0 {
		t.Errorf("queue %+v, want 2 pending tasks and no archived one", qi)
	}

	removed, err := tasks.remove(live, 1)
	if err != nil || !removed {
		t.Errorf("remove = %v, %v", removed, err)
	}
	if removed, err := tasks.remove(live, 1); err != nil || removed {
		t.Errorf("second remove = %v, %v; want nothing to remove", removed, err)
	}
}
