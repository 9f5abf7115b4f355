package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

// Processes share one pause through Redis: while it holds they wait, one of them at a time
// probes when it is due, a failed probe doubles the wait and a good one ends the pause for all.
func TestPauseProbesOneAtATime(t *testing.T) {
	env := redistest.New(t)
	ctx := context.Background()
	key := env.Prefix + "ns:pause"
	procs := make([]*pause, 4)
	for i := range procs {
		procs[i] = &pause{rdb: env.Client, key: key, now: time.Now}
	}

	if probe, err := procs[0].admit(ctx, EndpointGenerate, 0); probe || err != nil {
		t.Fatalf("unpaused account: probe %t, %v; want a plain go-ahead", probe, err)
	}
	pe, err := procs[0].start(ctx, CauseMaintenance, 0)
	if err != nil || pe.Cause != CauseMaintenance {
		t.Fatalf("start: %+v, %v", pe, err)
	}
	if d := pe.Until.Sub(pe.now); d < 900*time.Millisecond || d > time.Second {
		t.Errorf("first probe in %s, want about 1 s", d)
	}
	// A refusal met by another call already on its way does not move the schedule.
	if pe2, err := procs[1].start(ctx, CauseMaintenance, 0); err != nil || pe2.Until.Sub(pe.Until).Abs() > 50*time.Millisecond {
		t.Errorf("second refusal moved the pause from %s to %s (%v)", pe.Until, pe2.Until, err)
	}
	// Not due yet: a call that may not wait is told when to come back.
	_, err = procs[2].admit(ctx, EndpointRecordInfo, 0)
	var wait *PausedError
	if !errors.As(err, &wait) || wait.Cause != CauseMaintenance {
		t.Fatalf("admit while paused: %v, want a PausedError for maintenance", err)
	}

	// When it is due, every process tries at once: exactly one probes.
	var probes atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for _, p := range procs {
		wg.Go(func() {
			probe, err := p.admit(ctx, EndpointGenerate, 1500*time.Millisecond)
			var pe *PausedError
			if probe {
				probes.Add(1)
			} else if !errors.As(err, &pe) {
				t.Errorf("admit: %v, want a probe or a PausedError", err)
			}
		})
	}
	wg.Wait()
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes at once, want 1", n)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("admission took %s", took)
	}

	// The probe fails: the next waits twice as long (2 s), then 4 s, up to the cap.
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second} {
		pe, err := procs[0].probeFailed(ctx, CauseMaintenance, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := pe.Until.Sub(pe.now); d < want-100*time.Millisecond || d > want {
			t.Errorf("after a failed probe the next is in %s, want %s", d, want)
		}
	}
	for range 10 {
		if _, err := procs[0].probeFailed(ctx, CauseMaintenance, 0); err != nil {
			t.Fatal(err)
		}
	}
	pe, _ = procs[0].get(ctx)
	if d := time.Until(pe.Until); d > probeSchedules[CauseMaintenance].cap || d < probeSchedules[CauseMaintenance].cap-time.Second {
		t.Errorf("after many failed probes the next is in %s, want the cap %s", d, probeSchedules[CauseMaintenance].cap)
	}

	// A good probe ends it for every process.
	if err := procs[3].lift(ctx, CauseOther); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if probe, err := p.admit(ctx, EndpointGenerate, 0); probe || err != nil {
			t.Errorf("after the pause: probe %t, %v; want a plain go-ahead", probe, err)
		}
	}
}

// A pause for credits stops submissions only: polls of tasks already paid for go on.
func TestPauseForCreditsStopsSubmitsOnly(t *testing.T) {
	env := redistest.New(t)
	ctx := context.Background()
	p := &pause{rdb: env.Client, key: env.Prefix + "ns:pause", now: time.Now}
	if _, err := p.start(ctx, CauseOutOfCredits, 0); err != nil {
		t.Fatal(err)
	}
	if probe, err := p.admit(ctx, EndpointRecordInfo, 0); probe || err != nil {
		t.Errorf("poll during a credits pause: probe %t, %v; want a plain go-ahead", probe, err)
	}
	var pe *PausedError
	if _, err := p.admit(ctx, EndpointGenerate, 0); !errors.As(err, &pe) || pe.Cause != CauseOutOfCredits {
		t.Errorf("submit during a credits pause: %v, want a PausedError", err)
	}
	if d := time.Until(pe.Until); d < 50*time.Second || d > time.Minute {
		t.Errorf("credits pause probed in %s, want a minute", d)
	}
}
