package worker_test

import (
	"reflect"
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

// buildWorker builds a worker through the composition root the binary uses, with the options the
// binary would have for these budgets (the poll schedule knows its poll budget, as the binary's
// does): its limiters are the account's (every worker of a test shares them) on rdb, in
// namespace ns. Whatever wo sets wins over the binary's options; a Redis or Kie it sets replaces
// the default one.
func buildWorker(t *testing.T, rdb redis.UniversalClient, ns string, kc *kie.Client, store archive.Store, b budgets, wo worker.Options) *worker.Worker {
	t.Helper()
	cfg := config.Default()
	cfg.KieAPIKey = "test" // names the account of the shared limiters
	cfg.Namespace = ns
	cfg.Rate, cfg.PollRate, cfg.TransferRate = b.submit, b.poll, b.transfer
	w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Kie: kc, Store: store}, func(o *worker.Options) {
		account := *o
		overlay(o, wo)
		o.Store, o.Namespace = account.Store, account.Namespace
		o.SubmitLimiter, o.PollLimiter, o.TransferLimiter = account.SubmitLimiter, account.PollLimiter, account.TransferLimiter
	})
	if err != nil {
		t.Fatal(err)
	}
	return w.Worker
}

// overlay sets on o every field that wo sets (that is not its zero value).
func overlay(o *worker.Options, wo worker.Options) {
	dst, src := reflect.ValueOf(o).Elem(), reflect.ValueOf(wo)
	for i := range src.NumField() {
		if f := src.Field(i); !f.IsZero() {
			dst.Field(i).Set(f)
		}
	}
}
