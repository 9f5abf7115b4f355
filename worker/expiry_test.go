package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/worker"
)

// With Kie's result lifetime compressed to seconds and a burst of submits larger than the archive
// workers drain at once, every successful result is archived before it expires and none is paid
// for twice.
func TestEveryResultArchivedBeforeExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a backlog against results that expire in seconds")
	}
	const n = 150
	// The burst keeps the worker at its capacity on purpose, and on a 2-core machine running
	// -race that capacity falls to a third when other work loads the machine: a fixed lifetime
	// either fails there or is too long to catch anything on a calm one. So the lifetime follows
	// the pace measured just before: twice the time this machine needs to archive the whole
	// batch, never under 8 s (24 h compressed). A result that waits longer than that waited on
	// something other than the work ahead of it.
	rate := drainRate(t, 60)
	ttl := max(8*time.Second, time.Duration(2*float64(n)/rate*float64(time.Second))).Round(time.Millisecond)
	t.Logf("the worker archives %.0f jobs a second here now; results live %s", rate, ttl)

	b := setup(t, expiryScenario(ttl))
	var specs []jobs.Spec
	for i := range n {
		specs = append(specs, jobs.Spec{Batch: "expiry", Prompt: fmt.Sprintf("a kite over dunes, frame %d", i)})
	}
	b.enqueue(t, specs...)
	c := b.run(t, "expiry", 2*time.Minute)

	ctx := context.Background()
	byTask := map[string]*jobs.Job{}
	if err := b.ledger.Each(ctx, "expiry", func(j *jobs.Job) error {
		if j.Reason == jobs.Expired {
			t.Errorf("%s: result lost: %s", j.ID, j.Error)
		}
		byTask[j.TaskID] = j
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var slack []time.Duration
	for _, ti := range b.sim.Tasks() {
		if ti.Outcome != kie.Succeeded {
			continue
		}
		j := byTask[ti.TaskID]
		if j == nil || j.State != jobs.Archived {
			t.Errorf("successful task %s was never archived (job %+v)", ti.TaskID, j)
			continue
		}
		sc, err := archive.ReadSidecar(ctx, b.store, j.Batch, j.ID)
		if err != nil {
			t.Errorf("%s: %v", j.ID, err)
			continue
		}
		expires := ti.CompleteTime.Add(ttl)
		if !sc.ArchivedAt.Before(expires) {
			t.Errorf("%s archived at %s, after its result expired at %s", j.ID, sc.ArchivedAt, expires)
		}
		slack = append(slack, expires.Sub(sc.ArchivedAt))
	}
	if got := b.checkArchive(t, "expiry"); got != n || c.Archived != n {
		t.Errorf("%d of %d jobs archived (counts %+v)", got, n, c)
	}
	if st := b.sim.Stats(); st.Accepted != n || st.LiveDuplicates != 0 {
		t.Errorf("Kie accepted %d submissions for %d jobs, %d of them paid twice", st.Accepted, n, st.LiveDuplicates)
	}
	if len(slack) > 0 {
		slices.Sort(slack)
		t.Logf("time left before expiry when archived: least %s, median %s", slack[0].Round(time.Millisecond), slack[len(slack)/2].Round(time.Millisecond))
	}
}

// expiryScenario is a simulator and worker where results expire ttl after completion, submits
// arrive at 50 a second, and archiving has a cost (a 100 ms download): the two archive workers
// drain 20 a second at most, so the archive backlog needs the poll slots too.
func expiryScenario(ttl time.Duration) setupOpts {
	return setupOpts{
		sim: kiesim.Options{
			GenerateLimit: 50, GenerateWindow: time.Second,
			RecordInfoLimit: 100, RecordInfoWindow: time.Second,
			GenTimeMedian: time.Second, GenTimeSigma: 0.3,
			ResultTTL:     ttl,
			DownloadDelay: 100 * time.Millisecond,
			Seed:          11,
		},
		worker: worker.Options{
			SubmitWorkers: 8, PollWorkers: 8, ArchiveWorkers: 2,
			FirstPoll: time.Second, // when most are done: early polls would only spend the poll budget
			ResultTTL: ttl, ExpiryMargin: 2 * time.Second, SweepInterval: time.Second,
		},
	}
}

// drainRate is how many jobs a second the expiry scenario's worker archives on this machine now,
// once it has more than it can take at once: a pilot of m jobs whose results do not expire,
// timed over the middle half of its archives (before it, generations are still arriving; after
// it, the last stragglers).
func drainRate(t *testing.T, m int) float64 {
	t.Helper()
	o := expiryScenario(time.Hour)
	// Every job submitted at once and done by its first poll: the whole backlog is there from
	// the start, one poll and one archive a job.
	o.sim.GenerateLimit, o.sim.GenTimeMedian, o.sim.GenTimeSigma = 1000, 100*time.Millisecond, -1
	// As many archive slots of their own as the scenario has slots in all, so that the pace
	// measured does not rest on poll slots taking archives, which the test is there to check.
	o.worker.ArchiveWorkers += o.worker.PollWorkers
	b := setup(t, o)
	var specs []jobs.Spec
	for i := range m {
		specs = append(specs, jobs.Spec{Batch: "pilot", Prompt: fmt.Sprintf("a dune at dawn, frame %d", i)})
	}
	b.enqueue(t, specs...)
	if c := b.run(t, "pilot", 2*time.Minute); c.Archived != int64(m) {
		t.Fatalf("pilot: %d of %d jobs archived (counts %+v)", c.Archived, m, c)
	}
	var at []time.Time
	if err := b.ledger.Each(context.Background(), "pilot", func(j *jobs.Job) error {
		at = append(at, j.ArchivedAt)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(at, time.Time.Compare)
	lo, hi := m/4, 3*m/4
	span := at[hi].Sub(at[lo])
	if span <= 0 {
		t.Fatalf("pilot: %d archives in no time (%s to %s)", hi-lo, at[lo], at[hi])
	}
	return float64(hi-lo) / span.Seconds()
}

// recorder is an Observer that keeps the sweep reports.
type recorder struct {
	mu     sync.Mutex
	sweeps []worker.SweepReport
}

func (r *recorder) Submitted()              {}
func (r *recorder) RateLimited(string)      {}
func (r *recorder) Generated(time.Duration) {}
func (r *recorder) Archived(int64)          {}
func (r *recorder) Failed(jobs.Reason)      {}
func (r *recorder) Swept(s worker.SweepReport) {
	r.mu.Lock()
	r.sweeps = append(r.sweeps, s)
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sweeps)
}

// capture is a slog handler that keeps every record.
type capture struct {
	mu      sync.Mutex
	records []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.records = append(c.records, r.Clone())
	c.mu.Unlock()
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

// find returns the attributes of the records with message msg.
func (c *capture) find(msg string) []map[string]slog.Value {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range c.records {
		if r.Message != msg {
			continue
		}
		m := map[string]slog.Value{"level": slog.StringValue(r.Level.String())}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Resolve(); return true })
		out = append(out, m)
	}
	return out
}

// teeHandler sends every record to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}
func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.a.Enabled(ctx, r.Level) {
		_ = h.a.Handle(ctx, r.Clone())
	}
	if h.b.Enabled(ctx, r.Level) {
		return h.b.Handle(ctx, r.Clone())
	}
	return nil
}
func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}
func (h teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{h.a.WithGroup(g), h.b.WithGroup(g)}
}

// generated puts a job straight into the generated state with the given expiry.
func (b *bundle) generated(t *testing.T, id string, expires time.Time) jobs.Ref {
	t.Helper()
	ctx := context.Background()
	b.enqueue(t, jobs.Spec{Batch: "sweep", ID: id, Prompt: "a lantern, " + id})
	r := jobs.Ref{Batch: "sweep", ID: id}
	if ok, err := b.ledger.RecordSubmitted(ctx, r, "task-"+id); !ok || err != nil {
		t.Fatalf("submitted %s: %v %v", id, ok, err)
	}
	res := jobs.Result{ResultURL: b.sim.URL + "/files/result/none.jpg", ExpiresAt: expires}
	if ok, err := b.ledger.RecordGenerated(ctx, r, "task-"+id, res); !ok || err != nil {
		t.Fatalf("generated %s: %v %v", id, ok, err)
	}
	return r
}

// A sweep reports the soonest expiry of any unarchived result, counts those within the margin,
// warns about them, and queues their archives.
func TestSweepWarnsBeforeExpiry(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Millisecond) // the ledger keeps milliseconds
	cases := []struct {
		name        string
		in          []time.Duration // expiry of each generated job, from now
		wantNear    int
		wantSoonest time.Duration
	}{
		{name: "nothing unarchived", in: nil},
		{name: "all far from expiry", in: []time.Duration{5 * time.Hour, 2 * time.Hour}, wantSoonest: 2 * time.Hour},
		{name: "one within the margin", in: []time.Duration{3 * time.Hour, 30 * time.Minute, 90 * time.Minute}, wantNear: 1, wantSoonest: 30 * time.Minute},
		{name: "one already past", in: []time.Duration{-time.Minute, 10 * time.Minute, 4 * time.Hour}, wantNear: 2, wantSoonest: -time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs, rec := &capture{}, &recorder{}
			b := setup(t, setupOpts{sim: calmSim(), logs: logs, worker: worker.Options{
				ExpiryMargin: time.Hour, Observer: rec, Now: func() time.Time { return now },
			}})
			for i, d := range tc.in {
				b.generated(t, fmt.Sprint("j", i), now.Add(d))
			}
			if err := b.w.Sweep(context.Background()); err != nil {
				t.Fatal(err)
			}
			if rec.count() != 1 {
				t.Fatalf("observer saw %d sweeps, want 1", rec.count())
			}
			rep := rec.sweeps[0]
			var wantSoonest time.Time
			if tc.in != nil {
				wantSoonest = now.Add(tc.wantSoonest)
			}
			if !rep.SoonestExpiry.Equal(wantSoonest) || rep.NearExpiry != tc.wantNear || rep.Archives != len(tc.in) {
				t.Errorf("report %+v, want soonest %s, %d near expiry, %d archives queued", rep, wantSoonest, tc.wantNear, len(tc.in))
			}
			warns := logs.find("unarchived results are close to expiry")
			switch {
			case tc.wantNear == 0 && len(warns) > 0:
				t.Errorf("warned with nothing near expiry: %v", warns)
			case tc.wantNear > 0 && len(warns) != 1:
				t.Errorf("%d warnings, want 1", len(warns))
			case tc.wantNear > 0:
				w := warns[0]
				if w["level"].String() != "WARN" || w["count"].Int64() != int64(tc.wantNear) || !w["expires"].Time().Equal(wantSoonest) {
					t.Errorf("warning %v, want count %d and expires %s", w, tc.wantNear, wantSoonest)
				}
			}
			info, err := b.inspector(t).GetQueueInfo(b.w.Queues().Archive)
			if len(tc.in) > 0 && (err != nil || info.Size != len(tc.in)) {
				t.Errorf("archive queue %+v (%v), want %d tasks", info, err, len(tc.in))
			}
		})
	}
}

// Any number of worker processes sweep as often as one: the scheduler of each enqueues a sweep
// every interval, and one sweep runs per interval.
func TestSweepsOncePerIntervalAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several one-second sweeps on the wall clock")
	}
	t.Parallel()
	rec := &recorder{}
	o := worker.Options{SweepInterval: time.Second, Observer: rec}
	b := setup(t, setupOpts{sim: calmSim(), worker: o})
	others := []*worker.Worker{b.w, b.another(t, o), b.another(t, o)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range others {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	// The sweep interval is asynq's cron, which runs on the wall clock: wait for a few sweeps
	// (however slow a loaded machine makes them), then compare with what the elapsed time allows.
	start := time.Now()
	eventually.True(t, 30*time.Second, "three processes to sweep 4 times with a 1s interval", func() bool { return rec.count() >= 4 })
	cancel()
	wg.Wait()
	elapsed := time.Since(start)
	got := rec.count()
	if got < 4 {
		t.Fatalf("3 processes swept %d times in %s with a 1s interval", got, elapsed)
	}
	// One sweep per interval plus one at start (and one racing the end); three processes
	// without coordination would sweep three times as often.
	if limit := int(elapsed/time.Second) + 2; got > limit {
		t.Errorf("3 processes swept %d times in %s with a 1s interval; want at most %d", got, elapsed.Round(time.Millisecond), limit)
	}
}
