package worker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/worker"
)

// runAll runs every worker until the batch is finished and returns its counts and how long it
// took.
func (b *bundle) runAll(t *testing.T, ws []*worker.Worker, batch string, timeout time.Duration) (jobs.Counts, time.Duration) {
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
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	c := b.finished(t, batch, timeout)
	return c, time.Since(start)
}

func batchOf(name string, n int) []jobs.Spec {
	specs := make([]jobs.Spec, n)
	for i := range specs {
		specs[i] = jobs.Spec{Batch: name, Prompt: fmt.Sprintf("a harbour at dawn, %s plate %d", name, i)}
	}
	return specs
}

func answered455(st kiesim.Stats) int {
	n := 0
	for k, v := range st.Answers {
		if k.Code == 455 {
			n += v
		}
	}
	return n
}

// A short maintenance window early in a batch costs about its own length and one probe
// interval, on two worker processes, with one probe at a time reaching Kie: not the fixed
// minute it used to.
func TestMaintenanceWindowCostsItsLength(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a maintenance window mid-batch")
	}
	const (
		n      = 40
		window = 4 * time.Second
	)
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 100, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, GenTimeSigma: -1, ErrorSignal: kiesim.SignalEither, Seed: 3,
	}})
	ws := []*worker.Worker{b.w, b.another(t, worker.Options{FirstPoll: 300 * time.Millisecond, PollInterval: 300 * time.Millisecond})}

	b.enqueue(t, batchOf("calm", n)...)
	calm, calmTook := b.runAll(t, ws, "calm", time.Minute)
	if calm.Archived != n {
		t.Fatalf("calm batch: %+v", calm)
	}

	accepted := b.sim.Stats().Accepted
	var ended atomic.Int64
	go func() {
		for b.sim.Stats().Accepted < accepted+5 {
			time.Sleep(5 * time.Millisecond)
		}
		b.sim.SetMaintenance(true)
		time.Sleep(window)
		b.sim.SetMaintenance(false)
		ended.Store(time.Now().UnixNano())
	}()
	b.enqueue(t, batchOf("maintenance", n)...)
	c, took := b.runAll(t, ws, "maintenance", time.Minute)
	if c.Archived != n {
		t.Errorf("batch with a maintenance window: %+v, want all %d archived", c, n)
	}
	if ended.Load() == 0 {
		t.Fatalf("the batch finished (%s) before its maintenance window ended", took)
	}
	st := b.sim.Stats()
	// The pause is probed after 1 s, then 2 s and 4 s later: a 4 s window ends at most one
	// probe interval (4 s) before a probe sees it has.
	limit := calmTook + window + 4*time.Second + 2*time.Second
	t.Logf("calm batch %s; with a %s maintenance window %s (limit %s); Kie answered 455 %d times",
		calmTook.Round(time.Millisecond), window, took.Round(time.Millisecond), limit.Round(time.Millisecond), answered455(st))
	if took > limit {
		t.Errorf("a %s maintenance window made the batch take %s, %s more than without; want at most the window and one probe interval",
			window, took.Round(time.Millisecond), (took - calmTook).Round(time.Millisecond))
	}
	// At most the calls already on their way when the window began (one per worker slot of the
	// two processes: 4 submit and 8 poll slots each), then one probe at a time.
	if got := answered455(st); got > 2*(4+8)+4 {
		t.Errorf("Kie answered 455 %d times: the account was not paused, or probed by more than one call at a time", got)
	}
	if st.LiveDuplicates != 0 || st.Accepted != 2*n {
		t.Errorf("simulator accepted %d tasks (%d paid twice) for %d jobs", st.Accepted, st.LiveDuplicates, 2*n)
	}
}

// generatedHook is an Observer that calls onGenerated for every task the worker sees succeed.
type generatedHook struct{ onGenerated func() }

func (generatedHook) Submitted()                {}
func (generatedHook) RateLimited(string)        {}
func (h generatedHook) Generated(time.Duration) { h.onGenerated() }
func (generatedHook) Archived(int64)            {}
func (generatedHook) Failed(jobs.Reason)        {}
func (generatedHook) Swept(worker.SweepReport)  {}

// A result Kie no longer serves (its URL and a fresh direct link both answer 404), long before
// the lifetime the worker assumes, ends its job failed as expired, and the batch finishes,
// instead of a download retried for half an hour while run waits.
func TestExpiredResultEndsTheJob(t *testing.T) {
	const n = 3
	var skew atomic.Int64 // the simulator's clock runs ahead of the worker's by this much
	opts := calmSim()
	opts.ResultTTL = 2 * time.Second
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	b := setup(t, setupOpts{
		sim: opts,
		worker: worker.Options{Observer: generatedHook{func() {
			// Each result is seen, then expires before its archive task runs.
			skew.Add(int64(time.Hour))
		}}},
	})
	b.enqueue(t, batchOf("gone", n)...)
	start := time.Now()
	c := b.run(t, "gone", time.Minute)
	took := time.Since(start)
	if c.Failed != n {
		t.Errorf("counts %+v, want all %d failed", c, n)
	}
	fails, err := b.ledger.Failures(context.Background(), "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range fails {
		if j.Reason != jobs.Expired {
			t.Errorf("%s failed as %s (%s), want %s", j.ID, j.Reason, j.Error, jobs.Expired)
		}
	}
	if took > 15*time.Second {
		t.Errorf("the batch took %s to end with expired results", took)
	}
	if st := b.sim.Stats(); st.Accepted != n {
		t.Errorf("simulator accepted %d tasks for %d jobs", st.Accepted, n)
	}
}
