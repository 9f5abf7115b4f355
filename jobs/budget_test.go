package jobs

import (
	"context"
	"slices"
	"testing"
)

func mustReserve(t *testing.T, l *Ledger, r Ref, price float64) Reservation {
	t.Helper()
	res, err := l.Reserve(context.Background(), r, ReserveRequest{Model: DefaultModel, Price: CreditsOf(price), PriceKnown: true})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mustBudget(t *testing.T, l *Ledger, batch string) BatchBudget {
	t.Helper()
	b, err := l.Budget(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A reservation is spent when its job is submitted or its call cut off, given back when Kie
// refused the call or the job ends otherwise; held jobs leave the held set when they end.
func TestReservationsSettle(t *testing.T) {
	t.Parallel()
	l, _, _ := opsSetup(t)
	ctx := context.Background()
	if _, err := l.CreateMany(ctx, specs("b", 6), Bulk); err != nil {
		t.Fatal(err)
	}
	if d, err := l.Dispatch(ctx, 6); err != nil || len(d) != 6 {
		t.Fatalf("dispatch: %v, %v", d, err)
	}
	limit := CreditsOf(12.5)
	if err := l.SetMaxCredits(ctx, "b", &limit); err != nil {
		t.Fatal(err)
	}
	ref := func(i int) Ref { return Ref{"b", specs("b", 6)[i].ID} }
	for i := range 4 {
		if got := mustReserve(t, l, ref(i), 2.5).Outcome; got != Reserved {
			t.Fatalf("job %d: %v, want reserved", i, got)
		}
	}
	// A second reserve of a reserved job keeps its reservation and takes no more.
	if res := mustReserve(t, l, ref(0), 2.5); res.Outcome != Reserved || mustBudget(t, l, "b").Reserved != CreditsOf(10) {
		t.Fatalf("reserving again: %+v, budget %+v", res, mustBudget(t, l, "b"))
	}
	if res := mustReserve(t, l, ref(4), 2.5); res.Outcome != Reserved {
		t.Fatalf("the fifth job fits exactly: %+v", res)
	}
	res := mustReserve(t, l, ref(5), 2.5)
	if res.Outcome != Held || res.Reason != "budget: batch cap 12.5 credits reached" {
		t.Fatalf("the sixth job: %+v, want held by the cap", res)
	}
	// The hold ends its dispatch: the sweeper must not queue a held job's task again and again.
	if d, err := l.DispatchedOf(ctx, "b"); err != nil || len(d) != 5 || slices.Contains(d, ref(5)) {
		t.Fatalf("dispatched after the hold: %v, %v; want the 5 others", d, err)
	}

	// Submitted: spent. Cut off after it may have reached Kie: spent. Refused: given back.
	// Cancelled: given back, and the held job is no longer held.
	if ok, err := l.RecordSubmitted(ctx, ref(0), "t0"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, err := l.Fail(ctx, ref(1), []State{Queued}, "", Interrupted, "cut off"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if v, err := l.Release(ctx, ref(2)); err != nil || v != CreditsOf(2.5) {
		t.Fatalf("release: %v, %v", v, err)
	}
	if v, err := l.Release(ctx, ref(2)); err != nil || v != 0 {
		t.Fatalf("a second release gave back %v, %v", v, err)
	}
	rep, err := l.CancelQueued(ctx, "b", "stop", nil)
	if err != nil || rep.Cancelled != 4 {
		t.Fatalf("cancel: %+v, %v", rep, err)
	}
	b := mustBudget(t, l, "b")
	if b.Spent != CreditsOf(5) || b.Reserved != 0 || b.Held() != 0 {
		t.Fatalf("budget %+v, want 5 spent, nothing reserved or held", b)
	}
	if j := mustGet(t, l, ref(0)); j.Credits != CreditsOf(2.5) {
		t.Errorf("the submitted job was charged %v", j.Credits)
	}
	if j := mustGet(t, l, ref(5)); j.Held != "" {
		t.Errorf("a cancelled job still says it is held: %q", j.Held)
	}
	c, err := l.Counts(ctx, "b")
	if err != nil || c.Held != 0 {
		t.Errorf("counts %+v, %v; want nothing held", c, err)
	}
	// The namespace's estimate counts what was spent, not what was given back.
	a, err := l.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a.Estimate != -CreditsOf(5) {
		t.Errorf("estimate %v after 5 credits spent and no balance read, want -5", a.Estimate)
	}
}

// The floor is checked against the balance read less what was reserved since; a job it stops is
// held only once a fresh reading confirms it.
func TestFloorAsksForAFreshBalance(t *testing.T) {
	t.Parallel()
	l, _, _ := opsSetup(t)
	ctx := context.Background()
	if _, err := l.CreateMany(ctx, specs("f", 3), Bulk); err != nil {
		t.Fatal(err)
	}
	floor := CreditsOf(10)
	if err := l.SetMinBalance(ctx, &floor); err != nil {
		t.Fatal(err)
	}
	ref := func(i int) Ref { return Ref{"f", specs("f", 3)[i].ID} }
	if res := mustReserve(t, l, ref(0), 5); res.Outcome != NeedBalance {
		t.Fatalf("no balance known: %+v, want NeedBalance", res)
	}
	rd, err := l.StartBalanceReading(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RecordBalance(ctx, rd, CreditsOf(20)); err != nil {
		t.Fatal(err)
	}
	if res := mustReserve(t, l, ref(0), 5); res.Outcome != Reserved {
		t.Fatalf("20 - 5 >= 10: %+v", res)
	}
	if res := mustReserve(t, l, ref(1), 5); res.Outcome != Reserved {
		t.Fatalf("15 - 5 >= 10: %+v", res)
	}
	// 10 - 5 < 10, but the estimate counts two reservations Kie may have billed already.
	if res := mustReserve(t, l, ref(2), 5); res.Outcome != NeedBalance {
		t.Fatalf("below the floor by the estimate: %+v, want a fresh reading first", res)
	}
	res, err := l.Reserve(ctx, ref(2), ReserveRequest{Model: DefaultModel, Price: CreditsOf(5), PriceKnown: true, FreshBalance: true})
	if err != nil || res.Outcome != Held || res.Reason != "budget: account balance below floor of 10 credits" {
		t.Fatalf("after a fresh reading: %+v, %v; want held by the floor", res, err)
	}
	b := mustBudget(t, l, "f")
	if b.HeldFloor != 1 {
		t.Fatalf("budget %+v", b)
	}
	// Lowering the floor lets it through.
	if err := l.SetMinBalance(ctx, nil); err != nil {
		t.Fatal(err)
	}
	refs, err := l.Unhold(ctx, "f", 0, 1)
	if err != nil || len(refs) != 1 || refs[0] != ref(2) {
		t.Fatalf("unhold: %v, %v", refs, err)
	}
	if j := mustGet(t, l, ref(2)); j.Held != "" {
		t.Errorf("a released job still says it is held: %q", j.Held)
	}
	if res := mustReserve(t, l, ref(2), 5); res.Outcome != Reserved {
		t.Fatalf("without a floor: %+v", res)
	}
}
