package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/worker"
)

// A ledger lost with its Redis (the embedded one dies with its process) is rebuilt from the file
// and the journal: nothing Kie was paid for is paid again, nothing archived is fetched again, and
// a call that may have reached Kie unanswered fails the job instead of paying twice.
func TestRestoreAfterLedgerLoss(t *testing.T) {
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 200 * time.Millisecond, Seed: 11,
	}})
	ctx := context.Background()
	spec := func(id, prompt string) jobs.Spec {
		return jobs.Spec{Batch: "restore", ID: id, Prompt: prompt}
	}
	done := spec("done", "a fox in the snow")
	answered := spec("answered", "a heron at dawn")
	inflight := spec("inflight", "a moth at a lamp")
	fresh := spec("fresh", "a crab on a rock")
	refused := spec("refused", "a cat on a wall")

	// The earlier life: "done" was archived; Kie answered a task for "answered" whose polls had
	// not finished.
	b.enqueue(t, done)
	b.run(t, "restore", 30*time.Second)
	dj, err := b.ledger.Get(ctx, jobs.Ref{Batch: "restore", ID: "done"})
	if err != nil || dj.State != jobs.Archived {
		t.Fatalf("first life: %+v, %v", dj, err)
	}
	task, err := b.kie.Generate(ctx, answered.Request("", ""))
	if err != nil {
		t.Fatal(err)
	}
	paidBefore := b.sim.Stats().Accepted

	// The Redis dies; the same file is loaded again.
	b.env.Cleanup()
	b.enqueue(t, done, answered, inflight, fresh, refused)
	for _, c := range []struct {
		id   string
		paid worker.Paid
		want jobs.State
	}{
		{"done", worker.Paid{TaskID: dj.TaskID, Submissions: 1}, jobs.Archived},
		{"answered", worker.Paid{TaskID: task, Submissions: 1, SubmittedAt: time.Now()}, jobs.Submitted},
		{"inflight", worker.Paid{InFlight: true}, jobs.Failed},
		{"refused", worker.Paid{}, jobs.Queued}, // Kie refused its only call: nothing was paid
		{"elsewhere", worker.Paid{TaskID: "x", Submissions: 1}, ""},
	} {
		got, err := b.w.Restore(ctx, jobs.Ref{Batch: "restore", ID: c.id}, c.paid)
		if err != nil || got != c.want {
			t.Errorf("Restore(%s) = %q, %v; want %q", c.id, got, err, c.want)
		}
	}
	c := b.run(t, "restore", 30*time.Second)

	st := b.sim.Stats()
	if n := st.Accepted - paidBefore; n != 2 {
		t.Errorf("%d submissions after the restart, want 2 (fresh and refused)", n)
	}
	if st.DuplicateSubmissions != 0 {
		t.Errorf("%d submissions paid twice", st.DuplicateSubmissions)
	}
	if c.Archived != 4 || c.Failed != 1 {
		t.Errorf("counts %+v, want 4 archived and inflight failed", c)
	}
	aj, _ := b.ledger.Get(ctx, jobs.Ref{Batch: "restore", ID: "answered"})
	if aj.State != jobs.Archived || aj.TaskID != task || aj.Submissions != 1 {
		t.Errorf("answered: %s, task %s, %d submissions; want archived from task %s, 1 submission", aj.State, aj.TaskID, aj.Submissions, task)
	}
	fj, _ := b.ledger.Get(ctx, jobs.Ref{Batch: "restore", ID: "inflight"})
	if fj.Reason != jobs.Interrupted {
		t.Errorf("inflight failed with %q, want %q", fj.Reason, jobs.Interrupted)
	}
	b.checkArchive(t, "restore")
}

// Resume schedules whatever a job needs next, so a job whose tasks were lost still finishes.
func TestResume(t *testing.T) {
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 200 * time.Millisecond, Seed: 12,
	}})
	ctx := context.Background()
	b.enqueue(t, jobs.Spec{Batch: "resume", ID: "lost", Prompt: "a kettle on a stove"})
	r := jobs.Ref{Batch: "resume", ID: "lost"}
	// It was dispatched and its submit task lost, as when asynq's keys go and the ledger stays.
	if ds, err := b.ledger.Dispatch(ctx, 1); err != nil || len(ds) != 1 {
		t.Fatalf("dispatch: %v %v", ds, err)
	}
	if err := b.w.Resume(ctx, r); err != nil {
		t.Fatal(err)
	}
	if c := b.run(t, "resume", 30*time.Second); c.Archived != 1 {
		t.Errorf("counts %+v", c)
	}
	if err := b.w.Resume(ctx, r); err != nil {
		t.Errorf("Resume of an archived job: %v", err)
	}
}
