package worker_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// calmSim is a well-behaved simulator with generous limits and quick generations.
func calmSim() kiesim.Options {
	return kiesim.Options{
		GenerateLimit: 50, GenerateWindow: time.Second, RecordInfoLimit: 100, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, GenTimeSigma: 0.2,
	}
}

// another is a second worker process on the bundle's Redis (or wo.Redis, a client of it),
// namespace, simulator (or wo.Kie) and archive.
func (b *bundle) another(t *testing.T, wo worker.Options) *worker.Worker {
	t.Helper()
	if wo.SpoolDir == "" {
		wo.SpoolDir = t.TempDir()
	}
	if wo.Logger == nil {
		wo.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	w := buildWorker(t, b.env.Client, b.env.Prefix+"ns", b.kie, b.store, budgets{
		submit:   ratelimit.Rate{Events: 20, Per: time.Second},
		poll:     ratelimit.Rate{Events: 50, Per: time.Second},
		transfer: ratelimit.Rate{Events: 200, Per: time.Second},
	}, wo)
	t.Cleanup(func() { w.Close() })
	return w
}

// inspector reads the bundle's asynq queues.
func (b *bundle) inspector(t *testing.T) *asynq.Inspector {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(b.env.Client)
	t.Cleanup(func() { insp.Close() })
	return insp
}
