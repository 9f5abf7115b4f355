package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

// runNaive works one case's batch the naive way: c.Processes × o.NaiveConcurrency goroutines,
// each taking the next job in the order it arrived, submitting it until Kie accepts it
// (sleeping 10 s, compressed, after every 429 or 455), polling every 3 s (compressed) until it
// ends, and downloading the image.
func runNaive(ctx context.Context, o Options, c Case) (Figures, error) {
	var f Figures
	sim, err := startSim(o, c)
	if err != nil {
		return f, err
	}
	defer sim.close()
	dir, err := os.MkdirTemp("", "kontextq-bench-naive-")
	if err != nil {
		return f, fmt.Errorf("bench: download directory: %w", err)
	}
	defer os.RemoveAll(dir)

	n := o.jobsOf(c)
	todo := make(chan jobs.Spec, n+c.Behind.Jobs)
	for _, s := range specs(batchName, n) {
		todo <- s
	}
	focus := func() {
		for _, s := range specs(focusBatch, c.Behind.Jobs) {
			todo <- s
		}
		close(todo)
	}
	if c.Behind.Jobs == 0 {
		close(todo)
	}

	nv := &naive{o: o, dir: dir, sleep: o.Scale.compress(naiveSleepOn429), poll: o.Scale.compress(naivePollEvery), done: map[string]time.Time{}}
	rctx, cancel := context.WithTimeout(ctx, timeout(o, c))
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range c.Processes {
		kc, err := sim.client()
		if err != nil {
			return f, err
		}
		for range o.NaiveConcurrency {
			wg.Go(func() {
				for s := range todo {
					if rctx.Err() != nil {
						return
					}
					nv.do(rctx, kc, s)
				}
			})
		}
	}
	tl := newTimeline(o, c, sim, start, focus)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	lastLog := time.Now()
wait:
	for {
		select {
		case <-finished:
			break wait
		case now := <-t.C:
			tl.tick(now)
			if now.Sub(lastLog) >= 5*time.Second {
				lastLog = now
				o.Logger.Info("bench: progress", "case", c.Name, "client", "naive", "archived", nv.archived.Load(),
					"failed", nv.failed.Load(), "total", n+c.Behind.Jobs)
			}
		}
	}
	elapsed := time.Since(start)
	tl.end()
	if ctx.Err() != nil {
		return f, ctx.Err()
	}

	f = sim.figures(o)
	f.Client = "naive"
	f.Jobs, f.Archived, f.Failed = n+c.Behind.Jobs, int(nv.archived.Load()), int(nv.failed.Load())
	f.Elapsed, f.Ideal, f.TimedOut = elapsed, o.ideal(c), rctx.Err() != nil
	nv.mu.Lock()
	defer nv.mu.Unlock()
	f.setLatencies(latencies(sim.completions(), nv.done))
	f.FocusJobs, f.FocusArchived = c.Behind.Jobs, nv.focusArchived
	if !nv.focusLast.IsZero() {
		f.FocusDone = nv.focusLast.Sub(tl.focusStart)
	}
	return f, nil
}

// naive is the baseline client's shared state.
type naive struct {
	o           Options
	dir         string
	sleep, poll time.Duration

	archived, failed atomic.Int64

	mu            sync.Mutex
	done          map[string]time.Time // task id → image downloaded
	focusArchived int
	focusLast     time.Time
}

// do carries one job to its downloaded image, or counts it failed. The naive client retries
// only 429s and maintenance (455): anything else fails the job, as a script without a retry
// policy would.
func (n *naive) do(ctx context.Context, kc *kie.Client, s jobs.Spec) {
	var taskID string
	for {
		id, err := kc.Generate(ctx, s.Request("", ""))
		if err == nil {
			taskID = id
			break
		}
		if !(kie.IsRateLimited(err) || kie.IsMaintenance(err)) || !sleep(ctx, n.sleep) {
			n.failed.Add(1)
			return
		}
	}
	for {
		if !sleep(ctx, n.poll) {
			n.failed.Add(1)
			return
		}
		rec, err := kc.RecordInfo(ctx, taskID)
		if kie.IsRateLimited(err) || kie.IsMaintenance(err) {
			if !sleep(ctx, n.sleep) {
				n.failed.Add(1)
				return
			}
			continue
		}
		if err != nil {
			n.failed.Add(1)
			return
		}
		switch rec.SuccessFlag {
		case kie.Generating:
			continue
		case kie.Succeeded:
			if err := n.download(ctx, kc, rec.ResultImageURL); err != nil {
				n.failed.Add(1)
				return
			}
			n.archived.Add(1)
			now := time.Now()
			n.mu.Lock()
			n.done[taskID] = now
			if s.Batch == focusBatch {
				n.focusArchived++
				n.focusLast = now
			}
			n.mu.Unlock()
			return
		default:
			n.failed.Add(1)
			return
		}
	}
}

// download saves the image with its sha256 computed on the way, as an archiver would.
func (n *naive) download(ctx context.Context, kc *kie.Client, url string) error {
	resp, err := kc.Fetch(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := os.CreateTemp(n.dir, "img-")
	if err != nil {
		return fmt.Errorf("bench: saving %s: %w", url, err)
	}
	defer out.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), resp.Body); err != nil {
		return fmt.Errorf("bench: downloading %s: %w", url, err)
	}
	return os.Rename(out.Name(), filepath.Join(n.dir, fmt.Sprintf("%x", h.Sum(nil))))
}

// sleep waits d or until ctx ends; it reports whether the whole wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
