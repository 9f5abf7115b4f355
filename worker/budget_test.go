package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// budgetSetup is a fast simulator billing pro 5 and max 10 credits, and n worker processes on
// one namespace that know the prices given.
func budgetSetup(t *testing.T, n int, prices map[string]float64, sim kiesim.Options) (*bundle, []*worker.Worker) {
	t.Helper()
	sim.GenerateLimit, sim.GenerateWindow = 40, time.Second
	sim.RecordInfoLimit, sim.RecordInfoWindow = 200, time.Second
	sim.GenTimeMedian, sim.GenTimeSigma = 100*time.Millisecond, -1
	if sim.Prices == nil {
		sim.Prices = map[string]float64{"flux-kontext-pro": 5, "flux-kontext-max": 10}
	}
	b := setup(t, setupOpts{sim: sim, worker: worker.Options{Prices: prices}})
	ws := []*worker.Worker{b.w}
	for range n - 1 {
		w := buildWorker(t, b.env.Client, b.ledger.Namespace(), b.kie, b.store, budgets{
			submit:   ratelimit.Rate{Events: 40, Per: time.Second},
			poll:     ratelimit.Rate{Events: 200, Per: time.Second},
			transfer: ratelimit.Rate{Events: 200, Per: time.Second},
		}, worker.Options{Prices: prices, FirstPoll: 100 * time.Millisecond, PollInterval: 100 * time.Millisecond, SpoolDir: t.TempDir()})
		t.Cleanup(func() { w.Close() })
		ws = append(ws, w)
	}
	return b, ws
}

// runAll runs every worker until the test ends.
func runAll(t *testing.T, ws []*worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func budgetJobs(batch string, n int, model string) []jobs.Spec {
	out := make([]jobs.Spec, n)
	for i := range out {
		out[i] = jobs.Spec{Batch: batch, ID: fmt.Sprintf("j%02d", i), Prompt: fmt.Sprintf("a lighthouse, take %d", i), Model: model}
	}
	return out
}

// stalled waits until nothing of the batch is under way and every job left is held.
func (b *bundle) stalled(t *testing.T, batch string, timeout time.Duration) jobs.Counts {
	t.Helper()
	var c jobs.Counts
	eventually.Nil(t, timeout, "batch "+batch+" to stop at its budget", func() error {
		var err error
		if c, err = b.ledger.Counts(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		if !c.Stalled() {
			return fmt.Errorf("counts %+v", c)
		}
		return nil
	})
	return c
}

// heldReasons counts the held jobs of a batch by the reason on their records.
func (b *bundle) heldReasons(t *testing.T, batch string) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := b.ledger.Each(context.Background(), batch, func(j *jobs.Job) error {
		if j.State == jobs.Queued {
			out[j.Held]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// submitTasksLeft counts the submit tasks of the namespace that asynq still holds in any state
// that runs again: a held job must not keep one cycling.
func (b *bundle) submitTasksLeft(t *testing.T) int {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(b.env.Client)
	exist, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range b.w.Queues().SubmitQueues() {
		if !slices.Contains(exist, name) {
			continue
		}
		q, err := insp.GetQueueInfo(name)
		if err != nil {
			t.Fatal(err)
		}
		n += q.Pending + q.Active + q.Scheduled + q.Retry
	}
	return n
}

func credits(v float64) *jobs.Credits { c := jobs.CreditsOf(v); return &c }

// Three worker processes race 20 jobs of a batch capped at 7 images' worth: exactly 7 are paid
// for at Kie, the other 13 stay queued with the reason on their records and no task cycling,
// and raising the cap releases them.
func TestBudgetCapStopsRacingWorkersExactly(t *testing.T) {
	t.Parallel()
	prices := map[string]float64{"flux-kontext-pro": 5}
	b, ws := budgetSetup(t, 3, prices, kiesim.Options{})
	ctx := context.Background()
	if _, err := b.enq.SetMaxCredits(ctx, "capped", credits(35), nil); err != nil {
		t.Fatal(err)
	}
	b.enqueue(t, budgetJobs("capped", 20, "")...)
	runAll(t, ws)

	c := b.stalled(t, "capped", 30*time.Second)
	st := b.sim.Stats()
	if c.Archived != 7 || c.Held != 13 || st.Accepted != 7 || st.CreditsSpent != 35 || st.Requests[kiesim.EndpointGenerate] != 7 {
		t.Fatalf("capped at 35 credits (7 images): counts %+v; Kie accepted %d calls of %d, billed %v", c, st.Accepted, st.Requests[kiesim.EndpointGenerate], st.CreditsSpent)
	}
	want := map[string]int{"budget: batch cap 35 credits reached": 13}
	if got := b.heldReasons(t, "capped"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("held jobs' reasons %v, want %v", got, want)
	}
	bb, err := b.ledger.Budget(ctx, "capped")
	if err != nil {
		t.Fatal(err)
	}
	if bb.Spent != jobs.CreditsOf(35) || bb.Reserved != 0 || bb.HeldCap != 13 {
		t.Fatalf("budget %+v, want 35 spent, nothing reserved, 13 held by the cap", bb)
	}
	if n := b.submitTasksLeft(t); n != 0 {
		t.Fatalf("%d submit tasks still queued for held jobs; want none cycling", n)
	}

	// Raising the cap releases the held jobs; they are paid for and archived.
	n, err := b.enq.SetMaxCredits(ctx, "capped", credits(100), nil)
	if err != nil || n != 13 {
		t.Fatalf("raising the cap released %d jobs (%v), want 13", n, err)
	}
	c = b.finished(t, "capped", 30*time.Second)
	st = b.sim.Stats()
	if c.Archived != 20 || st.Accepted != 20 || st.CreditsSpent != 100 {
		t.Fatalf("after the raise: counts %+v; Kie accepted %d, billed %v; want 20 archived and paid once each", c, st.Accepted, st.CreditsSpent)
	}
	if bb, _ := b.ledger.Budget(ctx, "capped"); bb.Spent != jobs.CreditsOf(100) || bb.Held() != 0 || bb.Reserved != 0 {
		t.Fatalf("budget after the raise %+v", bb)
	}
}

// A floor under the account's balance stops submissions before the balance would go below it,
// and lowering it lets the rest through.
func TestBudgetBalanceFloor(t *testing.T) {
	t.Parallel()
	b, ws := budgetSetup(t, 2, map[string]float64{"flux-kontext-pro": 5}, kiesim.Options{Credits: 100})
	ctx := context.Background()
	if _, err := b.enq.SetMinBalance(ctx, credits(60), nil); err != nil {
		t.Fatal(err)
	}
	b.enqueue(t, budgetJobs("floored", 20, "")...)
	runAll(t, ws)

	c := b.stalled(t, "floored", 30*time.Second)
	if st := b.sim.Stats(); c.Archived != 8 || c.Held != 12 || st.Accepted != 8 || b.sim.Credits() != 60 {
		t.Fatalf("balance 100, floor 60, 5 a job: counts %+v; Kie accepted %d, balance %v; want 8 paid, 12 held", c, st.Accepted, b.sim.Credits())
	}
	want := map[string]int{"budget: account balance below floor of 60 credits": 12}
	if got := b.heldReasons(t, "floored"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("held jobs' reasons %v, want %v", got, want)
	}

	n, err := b.enq.SetMinBalance(ctx, nil, nil)
	if err != nil || n != 12 {
		t.Fatalf("removing the floor released %d jobs (%v), want 12", n, err)
	}
	c = b.finished(t, "floored", 30*time.Second)
	if st := b.sim.Stats(); c.Archived != 20 || st.Accepted != 20 || b.sim.Credits() != 0 {
		t.Fatalf("after the floor is gone: counts %+v, accepted %d, balance %v", c, st.Accepted, b.sim.Credits())
	}
}

// Without a configured price, a capped batch measures its model's price from the balance around
// one submission sent alone, records it for every worker, and then holds the budget exactly.
func TestBudgetMeasuresUnknownPrice(t *testing.T) {
	t.Parallel()
	b, ws := budgetSetup(t, 3, nil, kiesim.Options{Prices: map[string]float64{"flux-kontext-pro": 7, "flux-kontext-max": 11}})
	ctx := context.Background()
	if _, err := b.enq.SetMaxCredits(ctx, "measured", credits(40), nil); err != nil {
		t.Fatal(err)
	}
	specs := append(budgetJobs("measured", 6, "flux-kontext-max"), budgetJobs("measured", 12, "")[6:]...)
	b.enqueue(t, specs...)
	runAll(t, ws)

	c := b.stalled(t, "measured", 30*time.Second)
	learned, err := b.ledger.LearnedPrices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each price is exact only if its measuring call was the one call billed between the two
	// readings of the balance.
	for model, want := range map[string]float64{"flux-kontext-pro": 7, "flux-kontext-max": 11} {
		if p, ok := learned[model]; ok && p != jobs.CreditsOf(want) {
			t.Errorf("learned price of %s: %v, want %v", model, p, want)
		}
	}
	bb, err := b.ledger.Budget(ctx, "measured")
	if err != nil {
		t.Fatal(err)
	}
	st := b.sim.Stats()
	if bb.Spent != jobs.CreditsOf(st.CreditsSpent) || bb.Reserved != 0 || bb.Unpriced != 0 {
		t.Fatalf("the batch counts %v spent (%v reserved, %d unpriced); Kie billed %v", bb.Spent, bb.Reserved, bb.Unpriced, st.CreditsSpent)
	}
	// At most one measuring submission per model may pass the cap, by less than its price.
	if st.CreditsSpent > 40+11 || 40-st.CreditsSpent >= 7 || int64(st.Accepted)+c.Held != 12 || c.Archived != int64(st.Accepted) {
		t.Fatalf("cap 40: Kie billed %v for %d calls; counts %+v", st.CreditsSpent, st.Accepted, c)
	}
	if len(learned) == 0 {
		t.Fatal("no price learned")
	}
}
