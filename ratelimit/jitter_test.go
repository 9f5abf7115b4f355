package ratelimit

import (
	"context"
	"testing"
	"time"
)

// A 429 right after a window the account filled to its ceiling means calls spaced to fit
// reached Kie bunched (one arrived late): it costs one slot, not a window, and teaches nothing.
// A second 429 within a window is not jitter: the account cools down for the whole window. Both
// widen the arrival margin.
func TestLoneJitter429CostsOneSlot(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	kie := Rate{20, 10 * time.Second}
	l := b.limiter(Options{Rate: kie})
	other := b.limiter(Options{Rate: kie})
	interval := time.Duration(float64(kie.Per) * (1 + DefaultMargin) / float64(kie.Events))
	drive(t, b.clock, []*Limiter{l}, adversarial[1], 30*time.Second, 1)

	if err := l.Throttled(ctx, 0); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if cool := s.CooldownUntil.Sub(b.clock.Now()); cool <= 0 || cool > interval {
		t.Errorf("cool-down %v after a lone 429 at the ceiling, want at most one slot (%v)", cool, interval)
	}
	if s.LearnedCeiling != 0 {
		t.Errorf("a lone 429 at the ceiling taught a ceiling of %d", s.LearnedCeiling)
	}
	// Every process of the account is back within two slots.
	start := b.clock.Now()
	for {
		res, err := allow(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			break
		}
		b.clock.Advance(res.RetryAfter)
	}
	if waited := b.clock.Now().Sub(start); waited > 2*interval {
		t.Errorf("next grant %v after a lone 429, want within two slots (%v)", waited, 2*interval)
	}

	// That call is refused too: a second 429 within the window cools the account down for it.
	b.clock.Advance(50 * time.Millisecond)
	if err := other.Throttled(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// A process that knows nothing of its own asks Redis, and hears of the cool-down.
	third := b.limiter(Options{Rate: kie})
	res, err := allow(ctx, third)
	if err != nil || res.Allowed {
		t.Fatalf("after a second 429: %+v, %v; want denied", res, err)
	}
	// The window may end a little later than the cool-down: jitter widened the margin.
	if res.RetryAfter < kie.Per-time.Millisecond || res.RetryAfter > kie.Per+time.Second {
		t.Errorf("after a second 429 within a window: retry after %v, want the one-window cool-down %v", res.RetryAfter, kie.Per)
	}
	if m := third.Stats().ArrivalMargin; m <= 200*time.Millisecond || m > 800*time.Millisecond {
		t.Errorf("arrival margin %v after jitter, want it widened from 200ms, to at most four times", m)
	}
}

// Jitter widens the arrival margin for every process, at any time scale, and quiet windows
// narrow it back to the configured one.
func TestJitterWidensMarginForAWhile(t *testing.T) {
	for _, per := range []time.Duration{10 * time.Second, 2 * time.Second} {
		t.Run(per.String(), func(t *testing.T) {
			ctx := context.Background()
			b := setup(t)
			kie := Rate{20, per}
			l := b.limiter(Options{Rate: kie})
			base := l.Stats().ArrivalMargin
			drive(t, b.clock, []*Limiter{l}, adversarial[1], 3*per, 1)
			if err := l.Throttled(ctx, 0); err != nil {
				t.Fatal(err)
			}
			widened := l.Stats().ArrivalMargin
			if widened != 2*base {
				t.Errorf("arrival margin %v after jitter, want twice the configured %v", widened, base)
			}
			// The next window is held to the wider margin: its first grant waits for it.
			other := b.limiter(Options{Rate: kie})
			grants := drive(t, b.clock, []*Limiter{other}, adversarial[1], 5*per, 2)
			if w := maxInWindow(grants, per+widened/2); w > kie.Events {
				t.Errorf("%d grants in a window of %v after jitter", w, per+widened/2)
			}
			b.clock.Advance(100 * per)
			drive(t, b.clock, []*Limiter{other}, adversarial[1], per, 3)
			if m := other.Stats().ArrivalMargin; m != base {
				t.Errorf("arrival margin %v a hundred quiet windows later, want the configured %v", m, base)
			}
		})
	}
}
