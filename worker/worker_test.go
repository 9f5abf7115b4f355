package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// bundle is one test's pipeline: real Redis, the simulator, a local archive.
type bundle struct {
	env    *redistest.Env
	sim    *kiesim.Server
	store  archive.Store
	dir    string
	w      *worker.Worker
	enq    *jobs.Enqueuer
	ledger *jobs.Ledger
	kie    *kie.Client
}

type setupOpts struct {
	sim      kiesim.Options
	worker   worker.Options
	told     ratelimit.Rate // the rate the worker is told (default: the simulator's)
	logLevel slog.Level
	// wrapStore, when set, wraps the local archive the worker is given (a failing store).
	wrapStore func(archive.Store) archive.Store
	// logs, when set, also receives every record the worker logs.
	logs slog.Handler
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	env := redistest.New(t)
	sim := kietest.NewServer(t, o.sim)
	dir := t.TempDir()
	store, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kie.New(kie.Options{APIKey: sim.Key, BaseURL: sim.APIURL, UploadURL: sim.UploadURL})
	if err != nil {
		t.Fatal(err)
	}
	told := o.told
	if told.Events == 0 {
		told = ratelimit.Rate{Events: o.sim.GenerateLimit, Per: o.sim.GenerateWindow}
	}
	wo := o.worker
	var ws archive.Store = store
	if o.wrapStore != nil {
		ws = o.wrapStore(store)
	}
	if wo.FirstPoll == 0 {
		wo.FirstPoll = 300 * time.Millisecond
	}
	if wo.PollInterval == 0 {
		wo.PollInterval = 300 * time.Millisecond
	}
	wo.SpoolDir = t.TempDir()
	lvl := o.logLevel
	if lvl == 0 {
		lvl = slog.LevelError
	}
	wo.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: lvl}))
	if o.logs != nil {
		wo.Logger = slog.New(teeHandler{wo.Logger.Handler(), o.logs})
	}
	ns := env.Prefix + "ns"
	w := buildWorker(t, env.Client, ns, kc, ws, budgets{
		submit:   told,
		poll:     ratelimit.Rate{Events: o.sim.RecordInfoLimit, Per: o.sim.RecordInfoWindow},
		transfer: ratelimit.Rate{Events: 200, Per: time.Second},
	}, wo)
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: ns})
	t.Cleanup(func() { w.Close(); enq.Close(); store.Close() })
	return &bundle{env: env, sim: sim, store: store, dir: dir, w: w, enq: enq, ledger: w.Ledger(), kie: kc}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// run works until the batch is finished or the timeout passes.
func (b *bundle) run(t *testing.T, batch string, timeout time.Duration) jobs.Counts {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	return b.finished(t, batch, timeout)
}

// finished waits until every job of the batch has ended and returns its counts.
func (b *bundle) finished(t *testing.T, batch string, timeout time.Duration) jobs.Counts {
	t.Helper()
	var c jobs.Counts
	eventually.Nil(t, timeout, "batch "+batch+" to finish", func() error {
		var err error
		if c, err = b.ledger.Counts(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		if !c.Done() {
			return fmt.Errorf("counts %+v", c)
		}
		return nil
	})
	return c
}

func (b *bundle) enqueue(t *testing.T, specs ...jobs.Spec) {
	t.Helper()
	for _, s := range specs {
		if _, err := b.enq.Enqueue(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}

// checkArchive asserts that every archived job's file holds exactly the bytes the simulator served
// for its task, and that its sidecar agrees.
func (b *bundle) checkArchive(t *testing.T, batch string) (archived int) {
	t.Helper()
	ctx := context.Background()
	err := b.ledger.Each(ctx, batch, func(j *jobs.Job) error {
		if j.State != jobs.Archived {
			return nil
		}
		archived++
		ti, ok := b.sim.Task(j.TaskID)
		if !ok {
			return fmt.Errorf("%s: simulator has no task %s", j.ID, j.TaskID)
		}
		data, err := os.ReadFile(j.Location)
		if err != nil {
			return fmt.Errorf("%s: %v", j.ID, err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != ti.ImageSHA256 || got != j.SHA256 {
			return fmt.Errorf("%s: archived sha256 %s, simulator served %s, ledger says %s", j.ID, got, ti.ImageSHA256, j.SHA256)
		}
		sc, err := archive.ReadSidecar(ctx, b.store, batch, j.ID)
		if err != nil {
			return fmt.Errorf("%s: sidecar: %v", j.ID, err)
		}
		if sc.SHA256 != j.SHA256 || sc.TaskID != j.TaskID || sc.Bytes != int64(len(data)) {
			return fmt.Errorf("%s: sidecar %+v disagrees with the archive", j.ID, sc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return archived
}

func TestPipelineUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs batches against every fault the simulator injects")
	}
	const n = 200
	b := setup(t, setupOpts{
		sim: kiesim.Options{
			GenerateLimit: 20, GenerateWindow: time.Second,
			RecordInfoLimit: 60, RecordInfoWindow: time.Second,
			GenTimeMedian: 300 * time.Millisecond, GenTimeSigma: 0.5,
			GenerationFailureRate: 0.10,
			TransientErrorRate:    0.05,
			TruncateRate:          0.10,
			Quirks:                true,
			ContentPolicyWords:    []string{"forbidden"},
			ErrorSignal:           kiesim.SignalEither,
			Seed:                  7,
		},
		// Told more than the true limit, so Kie's 429s (in both forms) happen.
		told:   ratelimit.Rate{Events: 30, Per: time.Second},
		worker: worker.Options{SubmitWorkers: 6, PollWorkers: 8, ArchiveWorkers: 4},
	})
	var specs []jobs.Spec
	for i := range n {
		s := jobs.Spec{Batch: "faults", Prompt: fmt.Sprintf("a lighthouse in a storm, study %d", i), OutputFormat: []string{"jpeg", "png"}[i%2]}
		if i%50 == 7 {
			s.Prompt = fmt.Sprintf("something forbidden %d", i)
		}
		specs = append(specs, s)
	}
	b.enqueue(t, specs...)
	c := b.run(t, "faults", 3*time.Minute)

	st := b.sim.Stats()
	if st.LiveDuplicates != 0 {
		t.Errorf("%d submissions paid twice (a repeat while the first task was alive)", st.LiveDuplicates)
	}
	if st.RateLimited == 0 {
		t.Errorf("the simulator sent no 429: the test did not exercise rate limiting")
	}
	if got := b.checkArchive(t, "faults"); got != int(c.Archived) {
		t.Errorf("checked %d archived files, counters say %d", got, c.Archived)
	}
	// Every failure must be one the simulator made final.
	fails, err := b.ledger.Failures(context.Background(), "faults")
	if err != nil {
		t.Fatal(err)
	}
	paid, resubmitted := 0, 0
	_ = b.ledger.Each(context.Background(), "faults", func(j *jobs.Job) error {
		paid += j.Submissions
		resubmitted += max(j.Submissions-1, 0)
		return nil
	})
	if paid != st.Accepted {
		t.Errorf("ledger counts %d paid submissions, simulator accepted %d", paid, st.Accepted)
	}
	// Identical requests are paid again only as resubmissions after a failed generation.
	if st.DuplicateSubmissions != resubmitted {
		t.Errorf("simulator saw %d repeated requests, the ledger made %d resubmissions", st.DuplicateSubmissions, resubmitted)
	}
	for _, j := range fails {
		switch j.Reason {
		case jobs.Rejected:
			if !strings.Contains(j.Spec.Prompt, "forbidden") {
				t.Errorf("%s rejected but its prompt is fine: %s", j.ID, j.Error)
			}
		case jobs.GenerationFailed:
			if j.Submissions != 3 {
				t.Errorf("%s failed generation after %d submissions, want 3", j.ID, j.Submissions)
			}
		default:
			t.Errorf("%s failed: %s: %s", j.ID, j.Reason, j.Error)
		}
	}
	if c.Failed < 4 || c.Archived < n-10 {
		t.Errorf("counts %+v: want the 4 forbidden prompts rejected and nearly all others archived", c)
	}
	t.Logf("counts %+v; simulator: accepted %d, 429s %d, truncated %d, answers %v", c, st.Accepted, st.RateLimited, st.DownloadsTruncated, st.Answers)

	// Running the same batch again does nothing and pays nothing.
	b.enqueue(t, specs...)
	b.run(t, "faults", 30*time.Second)
	if st2 := b.sim.Stats(); st2.Accepted != st.Accepted {
		t.Errorf("re-running paid %d more submissions", st2.Accepted-st.Accepted)
	}
}
