package jobs

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func TestDeadTask(t *testing.T) {
	t.Parallel()
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	cases := []struct {
		state    asynq.TaskState
		deadline time.Time
		dead     bool
	}{
		{asynq.TaskStateArchived, time.Time{}, true},
		{asynq.TaskStateCompleted, time.Time{}, true}, // kept after it ran: it never runs again
		{asynq.TaskStateRetry, past, true},
		{asynq.TaskStatePending, past, true},
		{asynq.TaskStateScheduled, past, true},
		{asynq.TaskStateRetry, future, false},
		{asynq.TaskStateRetry, time.Time{}, false},
		{asynq.TaskStatePending, time.Time{}, false},
		{asynq.TaskStateActive, past, false}, // running: it fails and retries on its own
	}
	for _, tc := range cases {
		if got := deadTask(&asynq.TaskInfo{State: tc.state, Deadline: tc.deadline}, now); got != tc.dead {
			t.Errorf("%s task, deadline in %s: dead = %t, want %t", tc.state, tc.deadline.Sub(now).Round(time.Second), got, tc.dead)
		}
	}
}
