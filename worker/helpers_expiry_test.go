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
	mk := func(name string, r ratelimit.Rate) *ratelimit.Limiter {
		return ratelimit.New(b.env.Client, ratelimit.Options{Name: name, Account: "test", Prefix: b.env.Prefix, Rate: r})
	}
	if wo.Redis == nil {
		wo.Redis = b.env.Client
	}
	if wo.Kie == nil {
		wo.Kie = b.kie
	}
	wo.Store, wo.Namespace = b.store, b.env.Prefix+"ns"
	wo.SubmitLimiter = mk("generate", ratelimit.Rate{Events: 20, Per: time.Second})
	wo.PollLimiter = mk("record-info", ratelimit.Rate{Events: 50, Per: time.Second})
	wo.TransferLimiter = mk("transfer", ratelimit.Rate{Events: 200, Per: time.Second})
	wo.SpoolDir = t.TempDir()
	if wo.Logger == nil {
		wo.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	w, err := worker.New(wo)
	if err != nil {
		t.Fatal(err)
	}
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
