package worker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// Every handler may run twice, even at the same time (asynq redelivers after crashes and
// shutdowns; callbacks race polls): the second run must do nothing new, above all pay nothing.
func TestHandlersRunTwiceDoNothingNew(t *testing.T) {
	var skew atomic.Int64 // the simulator's clock runs ahead of the wall clock by this much
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 50 * time.Millisecond, GenTimeSigma: 0.1,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	}})
	ctx := context.Background()
	spec := jobs.Spec{Batch: "twice", ID: "one", Prompt: "a teapot on a windowsill"}
	b.enqueue(t, spec)
	ref := jobs.Ref{Batch: "twice", ID: "one"}
	h := b.w.Handler()
	payload := jobs.EncodePayload(jobs.Payload{Ref: ref})
	both := func(typ string, p []byte) []error {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() { errs[i] = h.ProcessTask(ctx, asynq.NewTask(typ, p)) })
		}
		wg.Wait()
		return errs
	}

	both(jobs.TypeSubmit, payload)
	if errs := both(jobs.TypeSubmit, payload); errs[0] != nil || errs[1] != nil {
		t.Logf("second pair of submits: %v", errs)
	}
	if got := b.sim.Stats().Accepted; got != 1 {
		t.Fatalf("four submit runs of one job made %d paid submissions, want 1", got)
	}
	j, err := b.ledger.Get(ctx, ref)
	if err != nil || j.State != jobs.Submitted || j.Submissions != 1 {
		t.Fatalf("after submit: %+v, %v", j, err)
	}

	skew.Add(int64(5 * time.Second)) // the simulator finishes generating (about 50 ms)
	poll := jobs.EncodePayload(jobs.PollPayload{Ref: ref})
	for _, err := range both(jobs.TypePoll, poll) {
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
	}
	j, _ = b.ledger.Get(ctx, ref)
	if j.State != jobs.Generated {
		t.Fatalf("after two polls: state %s, want generated", j.State)
	}
	c, _ := b.ledger.Counts(ctx, "twice")
	if c.Generated != 1 || c.Submitted != 0 || c.Total != 1 {
		t.Fatalf("counters after two racing polls: %+v", c)
	}

	for _, err := range both(jobs.TypeArchive, payload) {
		if err != nil {
			t.Fatalf("archive: %v", err)
		}
	}
	both(jobs.TypeArchive, payload)
	both(jobs.TypeSubmit, payload)
	c, _ = b.ledger.Counts(ctx, "twice")
	if c.Archived != 1 || c.Total != 1 || c.Generated != 0 {
		t.Fatalf("counters after racing archives: %+v", c)
	}
	if got := b.checkArchive(t, "twice"); got != 1 {
		t.Fatalf("%d archived files verified, want 1", got)
	}
	if st := b.sim.Stats(); st.Accepted != 1 {
		t.Fatalf("%d paid submissions in the end, want 1", st.Accepted)
	}
}
