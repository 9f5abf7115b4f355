package worker_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// budgets are the rates a test's worker is told.
type budgets struct{ submit, poll, transfer ratelimit.Rate }

// buildWorker builds a worker through the composition root the binary uses: its limiters are the
// account's (every worker of a test shares them) on rdb, in namespace ns. wo is the test's own
// options: whatever it sets wins, and a Redis or Kie it sets replaces the default one.
func buildWorker(t *testing.T, rdb redis.UniversalClient, ns string, kc *kie.Client, store archive.Store, b budgets, wo worker.Options) *worker.Worker {
	t.Helper()
	cfg := config.Default()
	cfg.KieAPIKey = "test" // names the account of the shared limiters
	cfg.Namespace = ns
	cfg.Rate, cfg.PollRate, cfg.TransferRate = b.submit, b.poll, b.transfer
	w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Kie: kc, Store: store}, func(o *worker.Options) {
		own := wo
		if own.Redis == nil {
			own.Redis = o.Redis
		}
		if own.Kie == nil {
			own.Kie = o.Kie
		}
		own.Store, own.Namespace = o.Store, o.Namespace
		own.SubmitLimiter, own.PollLimiter, own.TransferLimiter = o.SubmitLimiter, o.PollLimiter, o.TransferLimiter
		*o = own
	})
	if err != nil {
		t.Fatal(err)
	}
	return w.Worker
}
