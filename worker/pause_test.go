package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
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
	rate := ratelimit.Rate{Events: 20, Per: time.Second}
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: rate.Events, GenerateWindow: rate.Per, RecordInfoLimit: 100, RecordInfoWindow: time.Second,
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
	t.Logf("calm batch %s; with a %s maintenance window %s; Kie answered 455 %d times",
		calmTook.Round(time.Millisecond), window, took.Round(time.Millisecond), answered455(st))
	// The pause is probed after 1 s, then 2 s and 4 s later: a 4 s window ends at most one
	// probe interval (4 s) before a probe sees it has.
	b.checkCost(t, "the maintenance window", time.Unix(0, ended.Load()), 4*time.Second, rate, "calm", "maintenance")
	// At most the calls already on their way when the window began (one per worker slot of the
	// two processes: 4 submit and 8 poll slots each), then one probe at a time.
	if got := answered455(st); got > 2*(4+8)+4 {
		t.Errorf("Kie answered 455 %d times: the account was not paused, or probed by more than one call at a time", got)
	}
	if st.LiveDuplicates != 0 || st.Accepted != 2*n {
		t.Errorf("simulator accepted %d tasks (%d paid twice) for %d jobs", st.Accepted, st.LiveDuplicates, 2*n)
	}
}

// checkCost checks what a disturbance (what, ended at end) cost batch, in two parts, each timed
// so that it does not depend on how fast a shared machine does the work itself:
//   - the batch's submissions after the end all went out within one probe interval of it, plus
//     the time the account's rate needs for them;
//   - from its last submission, the batch finished about as fast as the undisturbed batch calm
//     did from its own: the disturbance left nothing behind (a poll schedule thrown off, tasks
//     backing off for long).
//
// Each part is allowed the jitter of asynq's scheduling on top.
func (b *bundle) checkCost(t *testing.T, what string, end time.Time, probeInterval time.Duration, rate ratelimit.Rate, calm, batch string) {
	t.Helper()
	const (
		// asynq moves due tasks to their queue once a second and keeps retry times in whole
		// seconds.
		granularity = 2 * time.Second
		// Between its submission and its archive a job waits on asynq three times: the move of
		// its due poll (up to 1 s), then an idle server's next look for the poll and for the
		// archive (0.5 to 1.5 s each). Two batches' tails differ by up to 3 s with nothing wrong.
		tailJitter = 3 * time.Second
	)
	var after []time.Time
	for _, ti := range b.sim.Tasks() {
		if ti.CreateTime.After(end) {
			after = append(after, ti.CreateTime)
		}
	}
	if len(after) == 0 {
		t.Fatalf("no submission after %s ended: the test did not disturb the batch", what)
	}
	resumed := slices.MaxFunc(after, time.Time.Compare).Sub(end)
	limit := probeInterval + time.Duration(len(after))*rate.Per/time.Duration(rate.Events) + granularity
	t.Logf("%d submissions after %s ended, the last %s later (limit %s)", len(after), what, resumed.Round(time.Millisecond), limit)
	if resumed > limit {
		t.Errorf("the last of %d submissions after %s went out %s after its end; want at most one probe interval (%s) and %s per %d of them",
			len(after), what, resumed.Round(time.Millisecond), probeInterval, rate.Per, rate.Events)
	}
	calmTail, tail := b.tail(t, calm), b.tail(t, batch)
	t.Logf("from the last submission to the last archive: %s calm, %s after %s", calmTail.Round(time.Millisecond), tail.Round(time.Millisecond), what)
	if tail > calmTail+tailJitter {
		t.Errorf("after %s the batch took %s from its last submission to its last archive, the calm one %s", what, tail.Round(time.Millisecond), calmTail.Round(time.Millisecond))
	}
}

// tail is the time from a batch's last submission to its last archive.
func (b *bundle) tail(t *testing.T, batch string) time.Duration {
	t.Helper()
	var submitted, archived time.Time
	if err := b.ledger.Each(context.Background(), batch, func(j *jobs.Job) error {
		submitted, archived = later(submitted, j.SubmittedAt), later(archived, j.ArchivedAt)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return archived.Sub(submitted)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
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
