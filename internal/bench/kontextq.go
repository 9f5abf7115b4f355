package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// batchName is the batch every case enqueues (each case has its own namespace).
const batchName = "bench"

// specs is the batch of a case: distinct prompts, so no two jobs are the same request.
func specs(n int) []jobs.Spec {
	out := make([]jobs.Spec, n)
	for i := range out {
		out[i] = jobs.Spec{Batch: batchName, Prompt: fmt.Sprintf("a lighthouse at dusk, study %d", i), AspectRatio: "1:1"}
	}
	return out
}

// runKontextq works one case's batch with the real pipeline.
func runKontextq(ctx context.Context, o Options, c Case) (f Figures, err error) {
	sim, err := startSim(o)
	if err != nil {
		return f, err
	}
	defer sim.close()
	dir, err := os.MkdirTemp("", "kontextq-bench-")
	if err != nil {
		return f, fmt.Errorf("bench: archive directory: %w", err)
	}
	defer os.RemoveAll(dir)
	ns := newNamespace(o, c, "kontextq")
	defer func() {
		if derr := deleteNamespace(o.Redis, ns); derr != nil && err == nil {
			err = derr
		}
	}()

	enq := jobs.NewEnqueuer(o.Redis, jobs.EnqueuerOptions{Namespace: ns})
	defer enq.Close()
	for _, s := range specs(o.Jobs) {
		if _, err := enq.Enqueue(ctx, s); err != nil {
			return f, fmt.Errorf("bench: enqueue: %w", err)
		}
	}

	var workers []*worker.Worker
	defer func() {
		for _, w := range workers {
			_ = w.Close()
		}
	}()
	for range c.Processes {
		w, err := newWorker(o, c, sim, ns, dir)
		if err != nil {
			return f, err
		}
		workers = append(workers, w)
	}

	start := time.Now()
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Go(func() { errs[i] = w.Run(wctx) })
	}
	var storm *stormer
	if c.Storm {
		storm = &stormer{sim: sim, half: o.Jobs / 2, len: o.Storm}
	}
	counts, werr := watch(ctx, enq.Ledger(), o, c, storm)
	elapsed := time.Since(start)
	if storm != nil && !storm.done && !storm.start.IsZero() {
		sim.setStorm(false)
	}
	stop()
	wg.Wait()
	if err := errors.Join(append([]error{werr}, errs...)...); err != nil {
		return f, err
	}

	f = sim.figures(o)
	f.Client = "kontextq"
	f.Jobs, f.Archived, f.Failed = o.Jobs, int(counts.Archived), int(counts.Failed)
	f.Elapsed, f.Ideal = elapsed, o.ideal(c)
	return f, nil
}

// newWorker builds one simulated worker process through the composition root the binary uses:
// its own Kie client, its own limiters on the shared account, its own archive handle on the
// shared directory.
func newWorker(o Options, c Case, sim *simServer, ns, dir string) (*worker.Worker, error) {
	kc, err := sim.client()
	if err != nil {
		return nil, err
	}
	store, err := archive.NewLocal(dir)
	if err != nil {
		return nil, fmt.Errorf("bench: archive: %w", err)
	}
	cfg := config.Default()
	cfg.KieAPIKey, cfg.KieBaseURL, cfg.KieUploadURL = simKey, sim.url, sim.url
	cfg.Namespace = ns
	cfg.Rate = ratelimit.Rate{Events: c.Told * o.Limit, Per: o.Window}
	cfg.PollRate = ratelimit.Rate{Events: kiePollEvents, Per: o.compress(kiePollPer)}
	cfg.TransferRate = ratelimit.Rate{Events: 100, Per: time.Second}
	cfg.SubmitWorkers = o.SubmitWorkers
	cfg.FirstPoll, cfg.PollInterval = o.PollInterval, o.PollInterval
	w, err := app.NewWorker(cfg, app.Deps{Redis: o.Redis, Store: store, Kie: kc, Logger: o.Logger},
		func(wo *worker.Options) { wo.SpoolDir = dir })
	if err != nil {
		return nil, fmt.Errorf("bench: worker: %w", err)
	}
	return w.Worker, nil
}

// watch waits until the batch is finished, driving the storm and logging progress.
func watch(ctx context.Context, l *jobs.Ledger, o Options, c Case, storm *stormer) (jobs.Counts, error) {
	deadline := time.Now().Add(timeout(o, c))
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastLog := time.Now()
	for {
		counts, err := l.Counts(ctx, batchName)
		if err != nil {
			return counts, fmt.Errorf("bench: reading progress: %w", err)
		}
		if counts.Done() {
			return counts, nil
		}
		now := time.Now()
		storm.tick(now)
		if now.After(deadline) {
			return counts, fmt.Errorf("%w: %d of %d archived, %d failed after %s", errTimeout,
				counts.Archived, counts.Total, counts.Failed, timeout(o, c))
		}
		if now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			o.Logger.Info("bench: progress", "case", c.Name, "client", "kontextq", "archived", counts.Archived,
				"failed", counts.Failed, "total", counts.Total)
		}
		select {
		case <-ctx.Done():
			return counts, ctx.Err()
		case <-t.C:
		}
	}
}

// timeout bounds one run: ten times the ideal, and a minute more for stragglers.
func timeout(o Options, c Case) time.Duration {
	return 10*o.ideal(c) + time.Minute
}
