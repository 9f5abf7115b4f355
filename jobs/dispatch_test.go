package jobs

import (
	"context"
	"slices"
	"testing"
)

func dispatchAll(t *testing.T, l *Ledger, n int) []Ref {
	t.Helper()
	ds, err := l.Dispatch(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Ref, len(ds))
	for i, d := range ds {
		out[i] = d.Ref
	}
	return out
}

// A small batch loaded behind a large one of the same class takes every other turn, so it is
// done in about twice its own size in tokens; a job of a higher class goes before both.
func TestDispatchSharesRoundRobinAndHonoursClasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _, _ := opsSetup(t)
	if _, err := l.CreateMany(ctx, specs("big", 50), Bulk); err != nil {
		t.Fatal(err)
	}
	first := dispatchAll(t, l, 3)
	if want := []Ref{{"big", "j00"}, {"big", "j01"}, {"big", "j02"}}; !slices.Equal(first, want) {
		t.Fatalf("dispatched %v, want the big batch in load order %v", first, want)
	}
	if _, err := l.CreateMany(ctx, specs("small", 5), Bulk); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Create(ctx, &Spec{Batch: "svc", ID: "now", Prompt: "a person waits for this"}, Interactive); err != nil {
		t.Fatal(err)
	}
	got := dispatchAll(t, l, 11)
	want := []Ref{{"svc", "now"},
		{"big", "j03"}, {"small", "j00"}, {"big", "j04"}, {"small", "j01"}, {"big", "j05"}, {"small", "j02"},
		{"big", "j06"}, {"small", "j03"}, {"big", "j07"}, {"small", "j04"}}
	if !slices.Equal(got, want) {
		t.Fatalf("dispatched\n %v\nwant\n %v", got, want)
	}
	// The small batch is out of line; the big one has the turns to itself.
	if got := dispatchAll(t, l, 2); !slices.Equal(got, []Ref{{"big", "j08"}, {"big", "j09"}}) {
		t.Errorf("then %v, want big j08, j09", got)
	}
	waiting, err := l.Waiting(ctx)
	if err != nil || len(waiting) != 1 || waiting[0] != (WaitingBatch{Priority: Bulk, Batch: "big", Jobs: 40}) {
		t.Errorf("waiting %+v %v, want big with 40 in bulk", waiting, err)
	}
}

// Loading again puts nothing in line twice; a queued job whose place was lost (dispatched, then
// its task lost) is put back by a re-load; cancelled jobs are skipped by dispatch.
func TestLineIsIdempotentAndSkipsEndedJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _, _ := opsSetup(t)
	ss := specs("b", 4)
	for range 2 {
		if _, err := l.CreateMany(ctx, ss, Normal); err != nil {
			t.Fatal(err)
		}
	}
	if w, _ := l.Waiting(ctx); len(w) != 1 || w[0].Jobs != 4 || w[0].Priority != Normal {
		t.Fatalf("after loading twice, waiting %+v; want 4 in normal", w)
	}
	if j := mustGet(t, l, Ref{"b", "j00"}); j.Priority != Normal {
		t.Errorf("job priority %q, want normal", j.Priority)
	}
	got := dispatchAll(t, l, 1) // j00 dispatched; its task "lost"
	if _, err := l.CreateMany(ctx, ss, Normal); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CancelQueued(ctx, "b", "cancelled", nil); err != nil {
		t.Fatal(err)
	}
	if got := dispatchAll(t, l, 10); len(got) != 0 {
		t.Errorf("dispatched cancelled jobs %v", got)
	}
	if w, _ := l.Waiting(ctx); len(w) != 0 {
		t.Errorf("waiting after dispatch drained the cancelled jobs: %+v", w)
	}
	stale, err := l.DispatchedOf(ctx, "b")
	if err != nil || !slices.Equal(stale, got) {
		t.Errorf("dispatched of b: %v %v, want %v", stale, err, got)
	}
}

// Retried and resubmitted jobs go back in their own class; a resubmission goes to the front of
// its batch's line.
func TestPutInLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _, _ := opsSetup(t)
	if _, err := l.CreateMany(ctx, specs("b", 3), Interactive); err != nil {
		t.Fatal(err)
	}
	got := dispatchAll(t, l, 1)
	if n, err := l.PutInLine(ctx, true, got[0], Ref{"b", "j01"}, Ref{"b", "nope"}); err != nil || n != 1 {
		t.Fatalf("PutInLine: %d %v, want 1 (j01 is waiting already, nope does not exist)", n, err)
	}
	if got := dispatchAll(t, l, 3); !slices.Equal(got, []Ref{{"b", "j00"}, {"b", "j01"}, {"b", "j02"}}) {
		t.Errorf("dispatched %v, want j00 first again", got)
	}
}

func TestDropWaiting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _, _ := opsSetup(t)
	for _, p := range Priorities {
		if _, err := l.CreateMany(ctx, specs("b"+string(p), 2), p); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.Create(ctx, &Spec{Batch: "x", ID: "j" + string(p), Prompt: "p"}, p); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l.DropWaiting(ctx, "x"); err != nil || n != 3 {
		t.Fatalf("DropWaiting: %d %v, want 3", n, err)
	}
	w, _ := l.Waiting(ctx)
	for _, b := range w {
		if b.Batch == "x" {
			t.Errorf("x still waiting: %+v", w)
		}
	}
	if len(w) != 3 {
		t.Errorf("waiting %+v, want the three other batches", w)
	}
}

func TestShareOf(t *testing.T) {
	w := []WaitingBatch{
		{Normal, "svc", 2},
		{Bulk, "big", 1000}, {Bulk, "small", 10}, {Bulk, "mid", 50},
	}
	for _, tc := range []struct {
		batch    string
		fraction float64
		turns    int64
	}{
		{"svc", 1, 2},
		{"small", 0, 2 + 10*3},
		{"mid", 0, 2 + 10 + 50 + 50},
		{"big", 0, 2 + 10 + 50 + 1000},
	} {
		s, ok := ShareOf(w, tc.batch)
		if !ok || s.Fraction != tc.fraction || s.Turns != tc.turns {
			t.Errorf("%s: %+v %t, want fraction %v turns %d", tc.batch, s, ok, tc.fraction, tc.turns)
		}
	}
	s, _ := ShareOf(w[1:], "small")
	if s.Fraction != 1.0/3 {
		t.Errorf("small among three bulk batches: fraction %v, want 1/3", s.Fraction)
	}
	if _, ok := ShareOf(w, "nope"); ok {
		t.Error("share of a batch with nothing waiting")
	}
}

// A cancelled batch retried goes back in line in its class, and is dispatched.
func TestCancelThenRetryPutsBackInLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _, _ := opsSetup(t)
	if _, err := l.CreateMany(ctx, specs("b", 3), Normal); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DropWaiting(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CancelQueued(ctx, "b", "cancelled", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RetryFailed(ctx, "b", func(Reason) bool { return true }, func(r Ref, _ int) error {
		_, err := l.PutInLine(ctx, false, r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ds, err := l.Dispatch(ctx, 10)
	if err != nil || len(ds) != 3 || ds[0].Priority != Normal {
		t.Errorf("dispatched after retry: %+v %v, want the 3 jobs, normal", ds, err)
	}
}
