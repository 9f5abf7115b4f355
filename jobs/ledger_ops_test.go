package jobs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

// opsSetup returns a ledger on its own namespace with a clock the test moves.
func opsSetup(t *testing.T) (*Ledger, *redistest.Env, *time.Time) {
	t.Helper()
	env := redistest.New(t)
	now := time.UnixMilli(1_700_000_000_000)
	l := NewLedger(env.Client, LedgerOptions{Namespace: env.Prefix + "ns", Retention: time.Hour, Now: func() time.Time { return now }})
	return l, env, &now
}

func specs(batch string, n int) []*Spec {
	out := make([]*Spec, n)
	for i := range out {
		out[i] = &Spec{Batch: batch, ID: fmt.Sprintf("j%02d", i), Prompt: fmt.Sprintf("a red kite, take %d", i)}
	}
	return out
}

func mustGet(t *testing.T, l *Ledger, r Ref) *Job {
	t.Helper()
	j, err := l.Get(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestCreateManyIsIdempotentAndCounts(t *testing.T) {
	t.Parallel()
	l, _, _ := opsSetup(t)
	ctx := context.Background()
	ss := specs("b", 5)
	res, err := l.CreateMany(ctx, ss[:3], Bulk)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Existing != "" {
			t.Errorf("first create of %d: existing %q", i, r.Existing)
		}
	}
	// A job that moved on keeps its state and submissions; the file grew by two.
	if ok, err := l.RecordSubmitted(ctx, Ref{"b", "j01"}, "task-1"); err != nil || !ok {
		t.Fatalf("RecordSubmitted = %v, %v", ok, err)
	}
	res, err = l.CreateMany(ctx, ss, Bulk)
	if err != nil {
		t.Fatal(err)
	}
	want := []Created{{Queued, 0}, {Submitted, 1}, {Queued, 0}, {"", 0}, {"", 0}}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("second create of %s = %+v, want %+v", ss[i].ID, res[i], want[i])
		}
	}
	c, err := l.Counts(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Total: 5, Queued: 4, Submitted: 1}) {
		t.Errorf("counts %+v", c)
	}
	if got := mustGet(t, l, Ref{"b", "j04"}).Spec.Prompt; got != ss[4].Prompt {
		t.Errorf("stored prompt %q", got)
	}
	known, err := l.Known(ctx, []Ref{{"b", "j00"}, {"b", "nope"}, {"other", "j00"}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(known) != "[true false false]" {
		t.Errorf("Known = %v", known)
	}
}

func TestCancelQueuedLeavesJobsAtKie(t *testing.T) {
	t.Parallel()
	l, _, _ := opsSetup(t)
	ctx := context.Background()
	if _, err := l.CreateMany(ctx, specs("b", 6), Bulk); err != nil {
		t.Fatal(err)
	}
	// j00 submitted, j01 mid-submission, j02 archived, j03 failed earlier; j04 and j05 queued.
	mustApply := func(ok bool, err error) {
		t.Helper()
		if err != nil || !ok {
			t.Fatalf("setup: %v, %v", ok, err)
		}
	}
	mustApply(l.RecordSubmitted(ctx, Ref{"b", "j00"}, "t0"))
	mustApply(l.MarkSubmitting(ctx, Ref{"b", "j01"}, "", time.Time{}))
	mustApply(l.RecordSubmitted(ctx, Ref{"b", "j02"}, "t2"))
	mustApply(l.RecordGenerated(ctx, Ref{"b", "j02"}, "t2", Result{ResultURL: "https://x/y.png"}))
	mustApply(l.RecordArchived(ctx, Ref{"b", "j02"}, ArchiveRecord{Location: "/a/b/j02.png"}))
	mustApply(l.Fail(ctx, Ref{"b", "j03"}, []State{Queued}, "", Rejected, "flagged"))

	var got []string
	rep, err := l.CancelQueued(ctx, "b", "the batch was cancelled", func(r Ref, n int) error {
		got = append(got, fmt.Sprintf("%s:%d", r.ID, n))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep != (CancelReport{Cancelled: 2, InFlight: 2, Finished: 2}) {
		t.Errorf("report %+v", rep)
	}
	if fmt.Sprint(got) != "[j04:0 j05:0]" {
		t.Errorf("cancelled callbacks %v", got)
	}
	j := mustGet(t, l, Ref{"b", "j05"})
	if j.State != Failed || j.Reason != Cancelled || j.Error != "the batch was cancelled" {
		t.Errorf("cancelled job: %s %s %q", j.State, j.Reason, j.Error)
	}
	if st := mustGet(t, l, Ref{"b", "j01"}).State; st != Queued {
		t.Errorf("job mid-submission is %s, want still queued (it may be at Kie)", st)
	}
	c, _ := l.Counts(ctx, "b")
	if c != (Counts{Total: 6, Queued: 1, Submitted: 1, Archived: 1, Failed: 3}) {
		t.Errorf("counts %+v", c)
	}
	reasons, err := l.FailureReasons(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if reasons[Cancelled] != 2 || reasons[Rejected] != 1 || len(reasons) != 2 {
		t.Errorf("reasons %v", reasons)
	}

	rep, err = l.CancelQueued(ctx, "b", "again", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Cancelled != 0 || rep.Finished != 4 {
		t.Errorf("second cancel %+v, want nothing more cancelled", rep)
	}
}

func TestRetryFailedRequeuesByReason(t *testing.T) {
	t.Parallel()
	l, env, now := opsSetup(t)
	ctx := context.Background()
	if _, err := l.CreateMany(ctx, specs("b", 4), Bulk); err != nil {
		t.Fatal(err)
	}
	// j00: generated then expired after one paid submission; j01 interrupted; j02 cancelled; j03 queued.
	r0 := Ref{"b", "j00"}
	if ok, _ := l.RecordSubmitted(ctx, r0, "t0"); !ok {
		t.Fatal("setup")
	}
	if ok, _ := l.RecordGenerated(ctx, r0, "t0", Result{ResultURL: "https://x/0.png", ExpiresAt: now.Add(time.Hour)}); !ok {
		t.Fatal("setup")
	}
	if ok, _ := l.Fail(ctx, r0, []State{Generated}, "", Expired, "gone"); !ok {
		t.Fatal("setup")
	}
	if ok, _ := l.Fail(ctx, Ref{"b", "j01"}, []State{Queued}, "", Interrupted, "cut off"); !ok {
		t.Fatal("setup")
	}
	if _, err := l.CancelQueued(ctx, "b", "cancelled", nil); err != nil {
		t.Fatal(err)
	}
	if ttl := env.Client.PTTL(ctx, l.jobKey(r0)).Val(); ttl <= 0 {
		t.Fatalf("a failed job should expire after the retention; PTTL %v", ttl)
	}

	var got []string
	rep, err := l.RetryFailed(ctx, "b", func(r Reason) bool { return r != Interrupted }, func(r Ref, n int) error {
		got = append(got, fmt.Sprintf("%s:%d", r.ID, n))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requeued[Expired] != 1 || rep.Requeued[Cancelled] != 2 || rep.Skipped[Interrupted] != 1 {
		t.Errorf("report %+v", rep)
	}
	if len(got) != 3 {
		t.Errorf("requeued %v", got)
	}
	j := mustGet(t, l, r0)
	if j.State != Queued || j.Submissions != 1 || j.TaskID != "" || j.ResultURL != "" || j.Reason != "" {
		t.Errorf("retried job: state %s submissions %d task %q url %q reason %q", j.State, j.Submissions, j.TaskID, j.ResultURL, j.Reason)
	}
	if ttl := env.Client.PTTL(ctx, l.jobKey(r0)).Val(); ttl != -1 {
		t.Errorf("a queued job must not expire; PTTL %v", ttl)
	}
	if exp, _, _ := l.Expiring(ctx, now.Add(100*time.Hour), 10); len(exp) != 0 {
		t.Errorf("retried job still in the expiry index: %v", exp)
	}
	c, _ := l.Counts(ctx, "b")
	if c != (Counts{Total: 4, Queued: 3, Failed: 1}) {
		t.Errorf("counts %+v", c)
	}
	if st := mustGet(t, l, Ref{"b", "j01"}).State; st != Failed {
		t.Errorf("interrupted job is %s, want left failed", st)
	}

	rep, err = l.RetryFailed(ctx, "b", func(Reason) bool { return true }, func(Ref, int) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requeued[Interrupted] != 1 || len(rep.Requeued) != 1 {
		t.Errorf("retry with interrupted included: %+v", rep)
	}
}

func TestInfoRecordsPace(t *testing.T) {
	t.Parallel()
	l, _, now := opsSetup(t)
	ctx := context.Background()
	if _, err := l.CreateMany(ctx, specs("b", 2), Bulk); err != nil {
		t.Fatal(err)
	}
	info, err := l.Info(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if !info.FirstSubmitted.IsZero() || info.Created.IsZero() {
		t.Errorf("before any submission: %+v", info)
	}
	start := *now
	for i, id := range []string{"j00", "j01"} {
		*now = start.Add(time.Duration(i) * time.Minute)
		r := Ref{"b", id}
		if ok, _ := l.RecordSubmitted(ctx, r, "t"+id); !ok {
			t.Fatal("setup")
		}
		*now = now.Add(20 * time.Second)
		if ok, _ := l.RecordGenerated(ctx, r, "t"+id, Result{ResultURL: "https://x"}); !ok {
			t.Fatal("setup")
		}
		if ok, _ := l.RecordArchived(ctx, r, ArchiveRecord{Location: "x"}); !ok {
			t.Fatal("setup")
		}
	}
	info, err = l.Info(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if !info.FirstSubmitted.Equal(start) || !info.LastEnded.Equal(start.Add(80*time.Second)) || info.Archived != 2 {
		t.Errorf("info %+v; want first submission at %v and last end 80s later", info, start)
	}
}

// A failed job's record expires after the retention; the batch keeps its counters and its failed
// set. Loading the job again makes it one job again, not a second one beside a failure that no
// longer exists: otherwise the batch never reads as all archived and run exits 1 for a job that
// was archived the second time.
func TestCreateAfterFailedRecordExpired(t *testing.T) {
	t.Parallel()
	l, env, _ := opsSetup(t)
	ctx := context.Background()
	ss := specs("b", 2)
	if _, err := l.CreateMany(ctx, ss, Bulk); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"j00", "j01"} {
		if ok, err := l.Fail(ctx, Ref{"b", id}, []State{Queued}, "", Rejected, "flagged"); err != nil || !ok {
			t.Fatalf("fail %s: %v, %v", id, ok, err)
		}
		if err := env.Client.Del(ctx, l.jobKey(Ref{"b", id})).Err(); err != nil { // the retention passed
			t.Fatal(err)
		}
	}
	// Loaded again: one through Create, one through CreateMany.
	if st, _, err := l.Create(ctx, ss[0], Bulk); err != nil || st != "" {
		t.Fatalf("create again: %q, %v", st, err)
	}
	if res, err := l.CreateMany(ctx, ss[1:], Bulk); err != nil || res[0].Existing != "" {
		t.Fatalf("create many again: %+v, %v", res, err)
	}
	c, err := l.Counts(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counts{Total: 2, Queued: 2}) {
		t.Errorf("counts %+v, want 2 jobs, both queued", c)
	}
	if fails, err := l.Failures(ctx, "b"); err != nil || len(fails) != 0 {
		t.Errorf("failures %d, %v; want none", len(fails), err)
	}
	n := 0
	if err := l.Each(ctx, "b", func(*Job) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("Each visited %d jobs, %v; want 2", n, err)
	}
}
