package worker_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/worker"
)

// With three worker processes busy on a large bulk batch, a job enqueued as interactive and a
// small bulk batch loaded later are not stuck behind it: the interactive job takes one of the
// next few tokens, and the small batch shares the rate with the large one turn by turn. Counted
// in submissions (tokens), not seconds, so a slow machine does not change the verdict.
func TestPriorityAndFairShareAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three workers on a few hundred jobs")
	}
	sim := calmSim()
	sim.GenerateLimit, sim.GenerateWindow = 20, time.Second
	// Four submit slots per process, as the binary runs by default; every one of them holds a
	// job of the big batch when the others arrive.
	b := setup(t, setupOpts{sim: sim, worker: worker.Options{SubmitWorkers: 4, SubmitRate: 20}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	big := make([]jobs.Spec, 300)
	for i := range big {
		big[i] = jobs.Spec{Batch: "big", ID: fmt.Sprintf("j%03d", i), Prompt: fmt.Sprintf("a field of poppies, take %d", i)}
	}
	for _, s := range big {
		if _, err := b.enq.Enqueue(ctx, s, jobs.WithPriority(jobs.Bulk)); err != nil {
			t.Fatal(err)
		}
	}
	ws := []*worker.Worker{b.w, b.another(t, worker.Options{SubmitWorkers: 4, SubmitRate: 20}), b.another(t, worker.Options{SubmitWorkers: 4, SubmitRate: 20})}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	eventually.True(t, time.Minute, "the big batch under way", func() bool { return b.sim.Stats().Accepted >= 40 })

	if _, err := b.enq.Enqueue(ctx, jobs.Spec{Batch: "svc", ID: "now", Prompt: "a portrait someone waits for"},
		jobs.WithPriority(jobs.Interactive)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := b.enq.Enqueue(ctx, jobs.Spec{Batch: "small", ID: fmt.Sprint("s", i), Prompt: fmt.Sprint("a teacup, take ", i)},
			jobs.WithPriority(jobs.Bulk)); err != nil {
			t.Fatal(err)
		}
	}
	loaded := b.sim.Stats().Accepted
	b.finished(t, "svc", time.Minute)
	b.finished(t, "small", time.Minute)

	// Order every submission by when Kie accepted it.
	type sub struct {
		batch string
		at    time.Time
	}
	var subs []sub
	for _, batch := range []string{"big", "svc", "small"} {
		if err := b.ledger.Each(ctx, batch, func(j *jobs.Job) error {
			if !j.SubmittedAt.IsZero() {
				subs = append(subs, sub{batch, j.SubmittedAt})
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].at.Before(subs[j].at) })
	pos := map[string]int{}
	for i, s := range subs {
		pos[s.batch] = i + 1 // the last submission of each batch
	}
	t.Logf("enqueued after submission %d; interactive job: submission %d; small batch done: submission %d",
		loaded, pos["svc"], pos["small"])
	// The interactive job goes to its own queue, ahead of the bulk backlog, and the bulk jobs
	// holding the twelve slots leave it the next token: only the calls already under way, and
	// its dispatch, go first.
	const slots, backlog = 3 * 4, 8
	if got := pos["svc"] - loaded; got > 4 {
		t.Errorf("the interactive job was submission %d after it was enqueued; want at most 4", got)
	}
	const ahead = slots + backlog
	// Turn by turn with the big batch: 5 small jobs take about 10 submissions after the backlog
	// and the slots. Twice that leaves room for a loaded machine's slow dispatches and still
	// tells turns from first-come-first-served (the big batch's 260 jobs left).
	if bound := 2 * (ahead + 2*5); pos["small"]-loaded > bound {
		t.Errorf("the small batch's last job was submission %d after it was loaded; want at most %d (the big batch had %d left)",
			pos["small"]-loaded, bound, 300-loaded)
	}
	if st := b.sim.Stats(); st.Accepted > st.Requests["generate"] {
		t.Errorf("stats %+v", st)
	}
}

// A job dispatched by a process that died before queuing its submit task is found by the
// sweeper once it is a sweep interval old, and finishes.
func TestSweepQueuesALostDispatch(t *testing.T) {
	b := setup(t, setupOpts{sim: calmSim()})
	ctx := context.Background()
	b.enqueue(t, jobs.Spec{Batch: "lost", ID: "one", Prompt: "a lamp in a window"})
	if ds, err := b.ledger.Dispatch(ctx, 1); err != nil || len(ds) != 1 {
		t.Fatalf("dispatch: %v %v", ds, err)
	}
	insp := b.inspector(t)
	if _, err := insp.GetTaskInfo(b.w.Queues().SubmitFor(jobs.Normal), "submit:lost/one:0"); err == nil {
		t.Fatal("the submit task exists before the sweep")
	}
	// Two minutes on, the dispatch is stale.
	later := b.another(t, worker.Options{Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	if err := later.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := insp.GetTaskInfo(b.w.Queues().SubmitFor(jobs.Normal), "submit:lost/one:0"); err != nil {
		t.Fatalf("after the sweep, the submit task: %v", err)
	}
	if c := b.run(t, "lost", 30*time.Second); c.Archived != 1 {
		t.Errorf("counts %+v", c)
	}
	if st := b.sim.Stats(); st.Accepted != 1 {
		t.Errorf("%d paid submissions, want 1", st.Accepted)
	}
}

// A dispatch whose submit tasks cannot be queued (Redis fails in between) delivers them at the
// next top-up, not a sweep interval later, and never loses the jobs.
func TestDispatchDeliversAfterAFailure(t *testing.T) {
	b := setup(t, setupOpts{sim: calmSim()})
	ctx := context.Background()
	for i := range 3 {
		b.enqueue(t, jobs.Spec{Batch: "flaky", ID: fmt.Sprint("j", i), Prompt: fmt.Sprint("a gate in the rain, take ", i)})
	}
	// The first enqueue of an asynq submit task fails once.
	h := &faultHook{match: mentions(":t:submit:flaky/"), window: time.Minute, limit: 1}
	w := b.another(t, worker.Options{Redis: faultyClient(t, b, h)})
	if n, err := w.Dispatch(ctx, 8); err == nil || n != 0 {
		t.Fatalf("Dispatch with a failing Redis: %d, %v; want an error and nothing queued", n, err)
	}
	if n, err := w.Dispatch(ctx, 8); err != nil || n != 3 {
		t.Fatalf("the next Dispatch queued %d, %v; want the 3 left over", n, err)
	}
	b.w = w
	if c := b.run(t, "flaky", 30*time.Second); c.Archived != 3 {
		t.Errorf("counts %+v", c)
	}
	if st := b.sim.Stats(); st.Accepted != 3 {
		t.Errorf("%d paid submissions, want 3", st.Accepted)
	}
}
