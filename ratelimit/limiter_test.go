package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// demand is a caller pattern: given the last answer, when to ask next (relative to now).
type demand struct {
	name string
	next func(r *rand.Rand, res result) time.Duration
}

var adversarial = []demand{
	// Asks every 7 ms whatever the answer: the densest polling a caller could do.
	{"poll every 7ms", func(*rand.Rand, result) time.Duration { return 7 * time.Millisecond }},
	// Comes back exactly when told: lands on every slot boundary.
	{"obey RetryAfter exactly", func(_ *rand.Rand, res result) time.Duration {
		return res.RetryAfter
	}},
	// Idles, then hammers: a burst of attempts at one instant after up to 15 s of silence,
	// trying to cash in unused time.
	{"idle then burst", func(r *rand.Rand, res result) time.Duration {
		if r.IntN(25) == 0 {
			return time.Duration(r.Int64N(int64(15 * time.Second)))
		}
		if res.Allowed {
			return 0
		}
		return time.Duration(r.Int64N(int64(res.RetryAfter) + 1))
	}},
}

// drive runs callers (one per limiter, interleaved in time order) for d of simulated time and
// returns every grant's time.
func drive(t *testing.T, c *clock, ls []*Limiter, p demand, d time.Duration, seed uint64) []time.Time {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 1))
	end := c.Now().Add(d)
	next := make([]time.Time, len(ls))
	for i := range next {
		next[i] = c.Now()
	}
	var grants []time.Time
	for {
		i := 0
		for j := range next {
			if next[j].Before(next[i]) {
				i = j
			}
		}
		if next[i].After(end) {
			return grants
		}
		c.Set(next[i])
		res, err := allow(ctx, ls[i])
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		if res.Allowed {
			grants = append(grants, c.Now())
		} else if res.RetryAfter <= 0 {
			t.Fatalf("denied with RetryAfter %v", res.RetryAfter)
		}
		next[i] = c.Now().Add(p.next(r, res))
	}
}

func TestMarginUtilisationCost(t *testing.T) {
	kie := Rate{20, 10 * time.Second}
	for _, margin := range []float64{0.01, 0.02, 0.05} {
		b := setup(t)
		l := b.limiter(Options{Rate: kie, Margin: margin})
		d := 5 * time.Minute
		grants := drive(t, b.clock, []*Limiter{l}, adversarial[1], d, 1)
		util := issueUtilisation(grants, kie)
		want := 1 / (1 + margin)
		t.Logf("margin %.0f%%: utilisation %.1f%% (ideal %.1f%%), worst window %d",
			100*margin, 100*util, 100*want, maxInWindow(grants, kie.Per))
		if util < want-0.01 || util > want+0.005 {
			t.Errorf("margin %v: utilisation %.3f, want about %.3f", margin, util, want)
		}
		if w := maxInWindow(grants, kie.Per); w > kie.Events {
			t.Errorf("margin %v: a window held %d grants", margin, w)
		}
	}
}

func TestSharedBudgetAndCooldown(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	kie := Rate{20, 10 * time.Second}
	p1 := b.limiter(Options{Rate: kie})
	p2 := b.limiter(Options{Rate: kie})

	// An idle account's window is there to be used at once, by any of its processes.
	for i := range kie.Events {
		if res, err := allow(ctx, []*Limiter{p1, p2}[i%2]); err != nil || !res.Allowed {
			t.Fatalf("grant %d on an idle account: %+v, %v", i+1, res, err)
		}
	}
	res, err := allow(ctx, p2)
	if err != nil || res.Allowed {
		t.Fatalf("grant %d within the window: %+v, %v; want denied", kie.Events+1, res, err)
	}
	span := time.Duration(float64(kie.Per) * (1 + DefaultMargin))
	if d := res.RetryAfter - span; d < 0 || d > time.Microsecond {
		t.Errorf("RetryAfter %v, want the window and its margin, %v", res.RetryAfter, span)
	}

	b.clock.Advance(res.RetryAfter)
	if err := p1.Throttled(ctx, 0); err != nil {
		t.Fatalf("Throttled: %v", err)
	}
	res, err = allow(ctx, p2)
	if err != nil || res.Allowed {
		t.Fatalf("other process after a 429: %+v, %v; want denied", res, err)
	}
	if res.RetryAfter < kie.Per-time.Millisecond || res.RetryAfter > kie.Per {
		t.Errorf("other process told to retry after %v, want the one-window cool-down %v", res.RetryAfter, kie.Per)
	}
	s := p2.Stats()
	if s.CurrentRate >= s.ConfiguredRate {
		t.Errorf("other process sees rate %.3f/s after a 429, want below %.3f/s", s.CurrentRate, s.ConfiguredRate)
	}
	if want := b.clock.Now().Add(res.RetryAfter); !s.CooldownUntil.Equal(want) {
		t.Errorf("CooldownUntil %v, want %v", s.CooldownUntil, want)
	}

	// A Retry-After longer than the window is honoured.
	b.clock.Advance(kie.Per)
	if err := p2.Throttled(ctx, 45*time.Second); err != nil {
		t.Fatalf("Throttled: %v", err)
	}
	b.clock.Advance(30 * time.Second)
	res, err = allow(ctx, p1)
	if err != nil || res.Allowed || res.RetryAfter != 15*time.Second {
		t.Errorf("30 s into a 45 s Retry-After: %+v, %v; want denied for 15s more", res, err)
	}
	b.clock.Advance(15 * time.Second)
	if res, err := allow(ctx, p1); err != nil || !res.Allowed {
		t.Errorf("after the Retry-After: %+v, %v; want granted", res, err)
	}
}

func TestBudgetsAreSeparate(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	kie := Rate{1, time.Minute}
	gen := b.limiter(Options{Name: "generate", Rate: kie})
	if res, _ := allow(ctx, gen); !res.Allowed {
		t.Fatal("first generate token denied")
	}
	for _, o := range []Options{
		{Name: "generate", Rate: kie},                     // same budget, another process
		{Name: "record-info", Rate: kie},                  // same account, other budget
		{Name: "generate", Account: "acct2", Rate: kie},   // other account
		{Name: "generate", Account: "acct1/x", Rate: kie}, // not confused by separators
	} {
		res, err := allow(ctx, b.limiter(o))
		if err != nil {
			t.Fatal(err)
		}
		shared := o.Name == "generate" && (o.Account == "" || o.Account == "acct1")
		if res.Allowed == shared {
			t.Errorf("%s/%s: Allowed=%v after acct1's generate token, want %v", o.Account, o.Name, res.Allowed, !shared)
		}
	}
}

func TestThrottledTeachesCeilingAndForgetsIt(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	// Told 60/10s; Kie's true limit is 20/10s.
	l := b.limiter(Options{Rate: Rate{60, 10 * time.Second}, ProbeAfter: 5 * time.Minute})
	grants := drive(t, b.clock, []*Limiter{l}, adversarial[1], 4*time.Second, 1)
	if len(grants) <= 20 {
		t.Fatalf("only %d grants in 4 s at 60/10s", len(grants))
	}
	// Everything past the 20th was refused.
	for range len(grants) - 20 {
		if err := l.Throttled(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	s := l.Stats()
	if s.LearnedCeiling != 20 {
		t.Fatalf("learned ceiling %d, want 20 (the grants Kie accepted in the window)", s.LearnedCeiling)
	}
	if want := 20 / (10 * (1 + DefaultMargin)); s.CurrentRate > want+1e-9 {
		t.Errorf("rate %.3f/s after learning, want at most %.3f/s", s.CurrentRate, want)
	}
	b.clock.Advance(5*time.Minute + time.Second)
	if _, err := allow(ctx, l); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.LearnedCeiling != 0 {
		t.Errorf("ceiling %d still trusted after ProbeAfter without a 429", s.LearnedCeiling)
	}
}

func TestRecoversAfterStorm(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	kie := Rate{20, 10 * time.Second}
	l := b.limiter(Options{Rate: kie})
	configured := l.Stats().ConfiguredRate
	drive(t, b.clock, []*Limiter{l}, adversarial[1], time.Minute, 1)

	// A 60 s storm: every call refused, whatever the rate.
	stormEnd := b.clock.Now().Add(time.Minute)
	for b.clock.Now().Before(stormEnd) {
		res, err := allow(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed {
			b.clock.Advance(res.RetryAfter)
			continue
		}
		b.clock.Advance(300 * time.Millisecond)
		if err := l.Throttled(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	s := l.Stats()
	t.Logf("after the storm: rate %.3f/s of %.3f/s, ceiling %d", s.CurrentRate, configured, s.LearnedCeiling)
	if s.CurrentRate > configured/4 {
		t.Errorf("rate %.3f/s after a minute of 429s, want cut to at most a quarter of %.3f/s", s.CurrentRate, configured)
	}

	// Silence, then demand again: the rate climbs back to the configured ceiling.
	b.clock.Advance(2 * time.Minute)
	drive(t, b.clock, []*Limiter{l}, adversarial[1], 10*time.Second, 2)
	s = l.Stats()
	if s.LearnedCeiling != 0 {
		t.Errorf("a storm taught a ceiling of %d", s.LearnedCeiling)
	}
	if s.CurrentRate < configured*0.999 {
		t.Errorf("rate %.3f/s two minutes after the storm, want back at %.3f/s", s.CurrentRate, configured)
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	ctx := context.Background()
	// A server that hangs up on every connection: Redis is "there" but never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	c := newClock()
	var events []EventKind
	l := New(rdb, Options{Name: "generate", Account: "a", Rate: Rate{20, 10 * time.Second}, Now: c.Now,
		Observer: ObserverFunc(func(k EventKind, _ Stats) { events = append(events, k) })})
	for i := range 20 {
		res, err := allow(ctx, l)
		if err == nil || res.Allowed {
			t.Fatalf("attempt %d with Redis down: %+v, %v; want denied with an error", i, res, err)
		}
		if res.RetryAfter != DefaultErrorRetry {
			t.Errorf("RetryAfter %v, want %v", res.RetryAfter, DefaultErrorRetry)
		}
		c.Advance(time.Second)
	}
	if err := l.Wait(ctx); err == nil {
		t.Error("Wait with Redis down returned no error")
	}
	if ok, retry, err := l.WaitAtMost(ctx, time.Second); ok || err == nil || retry <= 0 {
		t.Errorf("WaitAtMost with Redis down: %v, %v, %v; want false, a back-off, an error", ok, retry, err)
	}
	// A 429 still cools this process down.
	if err := l.Throttled(ctx, 0); err == nil {
		t.Error("Throttled with Redis down returned no error")
	}
	if res, _ := allow(ctx, l); res.Allowed || res.RetryAfter < 9*time.Second {
		t.Errorf("after a 429 with Redis down: %+v, want a local cool-down", res)
	}
	s := l.Stats()
	if s.Granted != 0 || s.Errors < 22 {
		t.Errorf("stats %+v: want no grant and every error counted", s)
	}
	if len(events) == 0 || events[0] != EventError {
		t.Errorf("observer saw %v, want errors", events)
	}
}

func TestReleaseGivesSlotBack(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	// One per window: the second grant is a reservation a window ahead.
	l := b.limiter(Options{Rate: Rate{1, 10 * time.Second}})
	if res, _ := allow(ctx, l); !res.Allowed {
		t.Fatal("first token denied")
	}
	g, err := l.take(ctx, b.clock.Now(), 11*time.Second)
	if err != nil || !g.allowed || g.wait <= 0 {
		t.Fatalf("reservation: %+v, %v", g, err)
	}
	l.release(g)
	b.clock.Advance(g.wait)
	other := b.limiter(Options{Rate: Rate{1, 10 * time.Second}})
	if res, _ := allow(ctx, other); !res.Allowed {
		t.Errorf("the released slot was not given to the next caller: %+v", res)
	}
}

func TestWaitFailsFastAndWaitAtMostReturnsRetry(t *testing.T) {
	ctx := context.Background()
	env := setup(t).env
	cooldown := 10 * time.Second
	o := Options{Name: "generate", Account: "a", Prefix: env.Prefix, Rate: Rate{20, cooldown}}
	l := New(env.Client, o)
	if err := l.Wait(ctx); err != nil {
		t.Fatalf("first Wait: %v", err)
	}
	throttled := time.Now()
	if err := l.Throttled(ctx, 0); err != nil {
		t.Fatal(err)
	}
	other := New(env.Client, o)

	// "At once" is measured against the caller's budget: a limiter that sat out the budget
	// would take all of it, so half of it leaves a loaded machine plenty of room.
	deadline := 5 * time.Second
	dctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err := other.Wait(dctx)
	if !errors.Is(err, ErrWouldExceedDeadline) {
		t.Errorf("Wait with a %v deadline in a %v cool-down: %v, want ErrWouldExceedDeadline", deadline, cooldown, err)
	}
	if el := time.Since(start); el > deadline/2 {
		t.Errorf("Wait took %v of its %v to give up, want at once", el, deadline)
	}

	budget := 3 * time.Second
	start = time.Now()
	ok, retry, err := other.WaitAtMost(ctx, budget)
	// What is left of the cool-down, give or take the time the calls themselves took.
	left := cooldown - time.Since(throttled)
	if ok || err != nil || retry < left-time.Second || retry > cooldown {
		t.Errorf("WaitAtMost(%v) with %v of the cool-down left: %v, %v, %v; want false, about %v, nil",
			budget, left, ok, retry, err, left)
	}
	if el := time.Since(start); el > budget/2 {
		t.Errorf("WaitAtMost took %v of its %v to give up, want at once", el, budget)
	}
}

func TestWaitSharesOneTokenPerRoundTrip(t *testing.T) {
	env := setup(t).env
	kie := Rate{10, 200 * time.Millisecond}
	o := Options{Name: "generate", Account: "a", Prefix: env.Prefix, Rate: kie}
	procs := []*Limiter{New(env.Client, o), New(env.Client, o)}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var mu sync.Mutex
	var grants []time.Time
	var wg sync.WaitGroup
	for _, l := range procs {
		for range 3 {
			wg.Go(func() {
				for {
					ok, _, err := l.WaitAtMost(ctx, 300*time.Millisecond)
					if err != nil {
						return
					}
					if ok {
						mu.Lock()
						grants = append(grants, time.Now())
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	var trips, granted int64
	for _, l := range procs {
		s := l.Stats()
		trips += s.RoundTrips
		granted += s.Granted
	}
	util := float64(len(grants)) / (1.5 * kie.PerSecond())
	t.Logf("%d grants in 1.5 s (%.0f%%), %d round trips", len(grants), 100*util, trips)
	// Timers on a loaded machine wake late and waste slots; the point here is round trips.
	if util < 0.5 {
		t.Errorf("utilisation %.2f with six waiters in two processes, want at least 0.5", util)
	}
	// A final release on cancellation may add one trip per waiter, and when a window frees up
	// both processes' waiters go for its slots at once: the one that comes second is denied.
	if float64(trips) > 1.25*float64(granted)+float64(len(procs)*3)+2 {
		t.Errorf("%d round trips for %d grants: contending processes should need about one per token", trips, granted)
	}
}

func TestObserverSeesEveryDecision(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	seen := map[EventKind]int64{}
	var last Stats
	l := b.limiter(Options{Observer: ObserverFunc(func(k EventKind, s Stats) {
		seen[k]++
		last = s
	})})
	drive(t, b.clock, []*Limiter{l}, adversarial[0], 30*time.Second, 3)
	if err := l.Throttled(ctx, 0); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if seen[EventGranted] != s.Granted || seen[EventDenied] != s.Denied || seen[EventThrottled] != s.Throttled {
		t.Errorf("observer saw %v, stats say granted %d denied %d throttled %d", seen, s.Granted, s.Denied, s.Throttled)
	}
	if last != s {
		t.Errorf("observer's last stats %+v, want %+v", last, s)
	}
	if s.Granted == 0 || s.Denied == 0 || s.Throttled != 1 {
		t.Errorf("stats %+v: want grants, denials and one throttle", s)
	}
}
