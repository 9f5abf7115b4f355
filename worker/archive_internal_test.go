package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/jobs"
)

func TestArchiveRetryDelay(t *testing.T) {
	archiveTask := asynq.NewTask(jobs.TypeArchive, nil)
	pollTask := asynq.NewTask(jobs.TypePoll, nil)
	storeDown := errors.New("archive put b/x.png: connection refused")
	cases := []struct {
		name     string
		n        int
		err      error
		task     *asynq.Task
		min, max time.Duration
	}{
		{"first archive retry", 0, storeDown, archiveTask, time.Second, 1250 * time.Millisecond},
		{"third archive retry", 2, storeDown, archiveTask, 4 * time.Second, 5 * time.Second},
		{"archive retries stay within a minute", 25, storeDown, archiveTask, time.Minute, 75 * time.Second},
		{"other tasks back off longer", 8, storeDown, pollTask, 256 * time.Second, 5 * time.Minute},
		{"rate limited archives wait as asked", 25, &RateLimitedError{RetryAfter: 3 * time.Second}, archiveTask, 3 * time.Second, 3 * time.Second},
	}
	for _, tc := range cases {
		for range 20 {
			if d := taskRetryDelay(tc.n, tc.err, tc.task); d < tc.min || d > tc.max {
				t.Errorf("%s: delay %s, want %s to %s", tc.name, d, tc.min, tc.max)
				break
			}
		}
	}
}
