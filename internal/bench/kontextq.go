package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// batchName is the main batch of every case (each case has its own namespace).
const batchName = "bench"

// specs is a batch: distinct prompts, so no two jobs are the same request.
func specs(batch string, n int) []jobs.Spec {
	out := make([]jobs.Spec, n)
	for i := range out {
		out[i] = jobs.Spec{Batch: batch, Prompt: fmt.Sprintf("a lighthouse at dusk, %s study %d", batch, i), AspectRatio: "1:1"}
	}
	return out
}

// writeJobFile writes a batch as the JSONL job file a user would load.
func writeJobFile(dir, batch string, n int) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, s := range specs(batch, n) {
		if err := enc.Encode(map[string]string{"prompt": s.Prompt, "aspectRatio": s.AspectRatio}); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, batch+".jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("bench: job file: %w", err)
	}
	return path, nil
}

// loadFile is the loader of tests that have no binary: the jobs package's reader and the
// Enqueuer, job by job.
func loadFile(ctx context.Context, rdb redis.UniversalClient, namespace, path, batch string) error {
	enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: namespace, Priority: jobs.Bulk})
	defer enq.Close()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := jobs.NewReader(f, path, jobs.FormatJSONL, jobs.ReadOptions{Batch: batch, BaseDir: filepath.Dir(path)})
	if err != nil {
		return err
	}
	for {
		it, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		it.Spec.File, it.Spec.Line = path, it.Line
		if _, err := enq.EnqueueValid(ctx, &it.Spec); err != nil {
			return err
		}
	}
}

// runKontextq works one case's batch with the real pipeline: the batch loaded from a file as
// `kontextq load` does, and worker processes built by internal/app from the binary's defaults,
// told only the account's rates.
func runKontextq(ctx context.Context, o Options, c Case) (f Figures, err error) {
	sim, err := startSim(o, c)
	if err != nil {
		return f, err
	}
	defer sim.close()
	dir, err := os.MkdirTemp("", "kontextq-bench-")
	if err != nil {
		return f, fmt.Errorf("bench: work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	ns := newNamespace(o, c, "kontextq")
	defer func() {
		if derr := deleteNamespace(o.Redis, ns); derr != nil && err == nil {
			err = derr
		}
	}()
	cfg := workerConfig(o, c, sim, ns)

	enq := jobs.NewEnqueuer(o.Redis, jobs.EnqueuerOptions{Namespace: ns})
	defer enq.Close()
	n := o.jobsOf(c)
	path, err := writeJobFile(dir, batchName, n)
	if err != nil {
		return f, err
	}
	if err := o.Load(ctx, o.Redis, ns, path, batchName); err != nil {
		return f, fmt.Errorf("bench: loading the batch: %w", err)
	}

	var workers []*app.Worker
	defer func() {
		for _, w := range workers {
			_ = w.Close()
		}
	}()
	for range c.Processes {
		w, err := newWorker(o, cfg, sim, dir)
		if err != nil {
			return f, err
		}
		workers = append(workers, w)
	}

	focus, stopFocus, err := focusLoader(ctx, o, c, cfg, enq, workers[0], dir)
	if err != nil {
		return f, err
	}
	defer stopFocus()

	start := time.Now()
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Go(func() { errs[i] = w.Run(wctx) })
	}
	tl := newTimeline(o, c, sim, start, focus.load)
	counts, werr := watch(ctx, enq.Ledger(), o, c, tl)
	elapsed := time.Since(start)
	tl.end()
	stop()
	wg.Wait()
	timedOut := errors.Is(werr, errTimeout)
	if timedOut {
		werr = nil
	}
	if err := errors.Join(append([]error{werr, focus.err}, errs...)...); err != nil {
		return f, err
	}

	f = sim.figures(o)
	f.Client = "kontextq"
	f.Jobs, f.Archived, f.Failed = n+c.Behind.Jobs, int(counts.Archived), int(counts.Failed)
	f.Elapsed, f.Ideal, f.TimedOut = elapsed, o.ideal(c), timedOut
	complete := sim.completions()
	archived := map[string]time.Time{}
	batches := []string{batchName}
	if c.Behind.Jobs > 0 {
		batches = append(batches, focusBatch)
	}
	f.FocusJobs = c.Behind.Jobs
	var focusLast time.Time
	for _, b := range batches {
		err := enq.Ledger().Each(ctx, b, func(j *jobs.Job) error {
			if j.State == jobs.Archived {
				archived[j.TaskID] = j.ArchivedAt
			}
			if b == focusBatch {
				if j.State == jobs.Archived {
					f.FocusArchived++
				}
				if end := j.ArchivedAt; j.State == jobs.Archived && end.After(focusLast) {
					focusLast = end
				}
			}
			return nil
		})
		if err != nil {
			return f, fmt.Errorf("bench: reading the ledger: %w", err)
		}
	}
	if b, ok := counts.focus(); ok {
		f.Archived += int(b.Archived)
		f.Failed += int(b.Failed)
	}
	if !focusLast.IsZero() {
		f.FocusDone = focusLast.Sub(tl.focusStart)
	}
	f.setLatencies(latencies(complete, archived))
	return f, nil
}

// workerConfig is the configuration of every worker process of a case: the binary's defaults,
// the simulated account, and the account's rates as its owner would tell them. Nothing else is
// tuned: a figure that needs a tuned setting does not count.
func workerConfig(o Options, c Case, sim *simServer, ns string) config.Config {
	cfg := config.Default()
	cfg.KieAPIKey, cfg.KieBaseURL, cfg.KieUploadURL = simKey, sim.url, sim.url
	cfg.Namespace = ns
	cfg.Rate = ratelimit.Rate{Events: c.told(o.Scale.Limit), Per: o.Scale.Window}
	cfg.PollRate = ratelimit.Rate{Events: kiePollEvents, Per: o.Scale.compress(kiePollPer)}
	return cfg
}

// newWorker builds one simulated worker process through the composition root the binary uses:
// its own Kie client, its own limiters on the shared account, its own archive handle on the
// shared directory.
func newWorker(o Options, cfg config.Config, sim *simServer, dir string) (*app.Worker, error) {
	kc, err := sim.client()
	if err != nil {
		return nil, err
	}
	store, err := archive.NewLocal(filepath.Join(dir, "archive"))
	if err != nil {
		return nil, fmt.Errorf("bench: archive: %w", err)
	}
	w, err := app.NewWorker(cfg, app.Deps{Redis: o.Redis, Store: store, Kie: kc, Logger: o.Logger},
		func(wo *worker.Options) { wo.SpoolDir = dir })
	if err != nil {
		return nil, fmt.Errorf("bench: worker: %w", err)
	}
	return w, nil
}

// focus loads the batch behind the main one when the timeline says so.
type focus struct {
	load func()
	err  error
}

// focusLoader prepares the batch behind: a job file for the loader, or the HTTP server of
// `kontextq serve` for one job posted to its API. stop shuts the server down.
func focusLoader(ctx context.Context, o Options, c Case, cfg config.Config, enq *jobs.Enqueuer, w *app.Worker, dir string) (*focus, func(), error) {
	fo := &focus{}
	if c.Behind.Jobs == 0 {
		return fo, func() {}, nil
	}
	if !c.Behind.API {
		path, err := writeJobFile(dir, focusBatch, c.Behind.Jobs)
		if err != nil {
			return nil, nil, err
		}
		fo.load = func() {
			if err := o.Load(ctx, o.Redis, cfg.Namespace, path, focusBatch); err != nil {
				fo.err = fmt.Errorf("bench: loading the batch behind: %w", err)
			}
		}
		return fo, func() {}, nil
	}
	scfg := cfg
	scfg.Listen = "127.0.0.1:0"
	addr, stop, err := app.StartServer(ctx, scfg, app.ServeDeps{Redis: o.Redis, Checker: w, Limiters: w.Limiters,
		InsecureNoToken: true, Logger: o.Logger})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: HTTP API: %w", err)
	}
	fo.load = func() {
		for _, s := range specs(focusBatch, c.Behind.Jobs) {
			if err := postJob(ctx, "http://"+addr+"/v1/jobs?batch="+focusBatch, s); err != nil {
				fo.err = fmt.Errorf("bench: posting a job to the API: %w", err)
				return
			}
		}
	}
	return fo, stop, nil
}

// postJob sends one job to POST /v1/jobs as a service would.
func postJob(ctx context.Context, url string, s jobs.Spec) error {
	body, err := json.Marshal(map[string]string{"prompt": s.Prompt, "aspectRatio": s.AspectRatio})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// progress is the state of both batches of a case.
type progress struct {
	Archived, Failed int64
	behind           *jobs.Counts
}

func (p progress) focus() (jobs.Counts, bool) {
	if p.behind == nil {
		return jobs.Counts{}, false
	}
	return *p.behind, true
}

// watch waits until the batch, and the one behind it, are finished, driving the timeline and
// logging progress. A run that does not finish in time ends with errTimeout and the counts so
// far.
func watch(ctx context.Context, l *jobs.Ledger, o Options, c Case, tl *timeline) (progress, error) {
	deadline := time.Now().Add(timeout(o, c))
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	lastLog := time.Now()
	for {
		var p progress
		main, err := l.Counts(ctx, batchName)
		if err != nil {
			return p, fmt.Errorf("bench: reading progress: %w", err)
		}
		p.Archived, p.Failed = main.Archived, main.Failed
		done := main.Done()
		if c.Behind.Jobs > 0 {
			b, err := l.Counts(ctx, focusBatch)
			if err != nil {
				return p, fmt.Errorf("bench: reading progress: %w", err)
			}
			p.behind = &b
			done = done && !tl.pending() && b.Done()
		}
		if done {
			return p, nil
		}
		now := time.Now()
		tl.tick(now)
		if now.After(deadline) {
			return p, errTimeout
		}
		if now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			o.Logger.Info("bench: progress", "case", c.Name, "client", "kontextq", "archived", main.Archived,
				"failed", main.Failed, "total", main.Total)
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-t.C:
		}
	}
}

// timeout bounds one run: five times the ideal, and a minute more for stragglers.
func timeout(o Options, c Case) time.Duration {
	return 5*o.ideal(c) + time.Minute
}
