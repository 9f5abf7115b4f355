package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrWouldExceedDeadline is returned (wrapped) by Wait and WaitAtMost when the context's deadline
// comes before the earliest moment a token could be granted: failing at once frees the caller
// instead of letting it wait for nothing.
var ErrWouldExceedDeadline = errors.New("ratelimit: no token can be granted before the context deadline")

// Limiter hands out the tokens of one budget (Options.Name) of one account, shared through
// Redis by every process that uses the same Prefix, Account and Name. It is safe for
// concurrent use.
type Limiter struct {
	rdb  redis.UniversalClient
	o    Options
	keys []string
	span time.Duration // Per*(1+Margin): the window the grant log is counted over

	// turn is held by the one goroutine of this process that is asking Redis for a slot or
	// waiting for the slot it was given. A process thus holds at most one future slot, so
	// waiters of many processes are served in turn, one round trip per token.
	turn chan struct{}

	mu sync.Mutex
	// notBefore is the earliest free slot Redis last told of: with a grant, when the next one
	// could fit; with a denial or a cool-down, when the slot asked for frees up. Only other
	// grants, and not the passing of time, can make the log fuller, so asking before it is
	// certain to fail and is not done.
	notBefore time.Time
	// free is how many grants Redis last said fit now, less those this process has gone to
	// take since: while some do, a waiter takes one at once beside the others.
	free int
	st   Stats

	// scriptNow, set only by tests, replaces Redis TIME in the scripts.
	scriptNow func() time.Time
}

// New returns a limiter for o. It does not touch Redis: the shared state is created by the
// first call and expires after a long idle period. New panics if o is invalid (see
// Options.Validate): configuration is validated before limiters are built.
func New(rdb redis.UniversalClient, o Options) *Limiter {
	if err := o.Validate(); err != nil {
		panic(err)
	}
	o = o.withDefaults()
	key := o.Prefix + "ratelimit:{" + o.Account + "/" + o.Name + "}"
	span := time.Duration(float64(o.Rate.Per) * (1 + o.Margin))
	configured := float64(o.Rate.Events) / span.Seconds()
	return &Limiter{
		rdb:  rdb,
		o:    o,
		keys: []string{key, key + ":grants"},
		span: span,
		turn: make(chan struct{}, 1),
		st: Stats{
			Name:           o.Name,
			CurrentRate:    configured,
			ConfiguredRate: configured,
			ArrivalMargin:  span - o.Rate.Per,
		},
	}
}

// Wait blocks until a token is granted or ctx ends. It fails at once, with an error wrapping
// ErrWouldExceedDeadline, when ctx's deadline comes before the earliest possible grant. A Redis
// error ends the wait with that error and no token.
func (l *Limiter) Wait(ctx context.Context) error {
	_, _, err := l.wait(ctx, -1)
	return err
}

// WaitAtMost waits at most maxWait for a token. When none can be had in time it returns false
// at once (it does not sit out maxWait knowing the answer) with how long the caller should wait before
// trying again: the submit handler puts its job back on the queue with that delay rather than
// holding a worker slot. Errors are those of Wait; with an error, granted is false and
// retryAfter is a short back-off.
func (l *Limiter) WaitAtMost(ctx context.Context, maxWait time.Duration) (granted bool, retryAfter time.Duration, err error) {
	return l.wait(ctx, max(maxWait, 0))
}

// Throttled reports that a call made with a token of this budget was refused as rate limited
// (429). Refusals that say nothing about the rate (maintenance, no credits) are not reported
// here: the worker pauses the account for them. retryAfter is the server's
// Retry-After (0 if none). Every process of the account then cools down for max(retryAfter,
// Rate.Per) and the shared rate is cut; the window before the refusal is recorded as a
// measurement of the true limit (see the package documentation). A lone 429 after a window
// filled to the ceiling is taken as jitter and cools down for one slot only. Throttled calls arriving
// during the cool-down belong to the same episode and do not cut the rate again.
//
// On a Redis error this process still cools down and slows down on its own, and the error is
// returned.
func (l *Limiter) Throttled(ctx context.Context, retryAfter time.Duration) error {
	return l.throttle(ctx, retryAfter)
}

// Stats returns this process's counters and the account's state as last seen.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// grant is one take answer.
type grant struct {
	allowed bool
	// wait is the delay until the granted slot, or, when denied, until the next free slot.
	wait time.Duration
	// next is the delay until a further grant could fit, after this one.
	next time.Duration
	// free is how many further grants fit now, after this one.
	free int
	// member names the grant in the log, for release.
	member string
}

// take runs the take script once: a grant of a slot at most maxDelay ahead, or a denial. A
// denial is not counted here: the caller counts the denials it returns.
func (l *Limiter) take(ctx context.Context, now time.Time, maxDelay time.Duration) (grant, error) {
	args := append(l.argv(), maxDelay.Microseconds())
	v, err := takeScript.Run(ctx, l.rdb, l.keys, args...).Slice()
	var g grant
	var sh shared
	if err == nil {
		g, sh, err = parseTake(v)
	}
	l.mu.Lock()
	l.st.RoundTrips++
	if err != nil {
		l.st.Errors++
		s := l.st
		l.mu.Unlock()
		l.observe(EventError, s)
		return grant{}, fmt.Errorf("ratelimit %s: take: %w", l.o.Name, err)
	}
	l.applyLocked(now, sh)
	l.notBefore = later(l.notBefore, now.Add(g.next))
	l.free = g.free
	if !g.allowed {
		l.mu.Unlock()
		return g, nil
	}
	l.st.Granted++
	s := l.st
	l.mu.Unlock()
	l.observe(EventGranted, s)
	return g, nil
}

// release gives back a granted slot its waiter will not use. Best effort: at worst the slot
// goes unused.
func (l *Limiter) release(g grant) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.mu.Lock()
	l.st.RoundTrips++
	l.mu.Unlock()
	_ = releaseScript.Run(ctx, l.rdb, l.keys, g.member).Err()
}

func (l *Limiter) throttle(ctx context.Context, retryAfter time.Duration) error {
	now := l.o.Now()
	args := append(l.argv(), max(retryAfter, 0).Microseconds(), decrease, learnBelow)
	v, err := throttleScript.Run(ctx, l.rdb, l.keys, args...).Slice()
	var sh shared
	if err == nil {
		sh, err = parseThrottle(v)
	}
	l.mu.Lock()
	l.st.RoundTrips++
	l.st.Throttled++
	if err != nil {
		// Without Redis, at least this process backs off as the shared state would have.
		l.st.Errors++
		l.notBefore = later(l.notBefore, now.Add(max(retryAfter, l.o.Rate.Per)))
		l.st.CooldownUntil = later(l.st.CooldownUntil, l.notBefore)
		l.st.CurrentRate = max(l.st.CurrentRate*decrease, l.st.ConfiguredRate*l.o.MinRate)
		s := l.st
		l.mu.Unlock()
		l.observe(EventError, s)
		return fmt.Errorf("ratelimit %s: throttle: %w", l.o.Name, err)
	}
	l.applyLocked(now, sh)
	s := l.st
	l.mu.Unlock()
	l.observe(EventThrottled, s)
	return nil
}

// wait implements Wait (maxWait < 0) and WaitAtMost.
func (l *Limiter) wait(ctx context.Context, maxWait time.Duration) (bool, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return false, 0, err
	}
	bounded := maxWait >= 0
	start := l.o.Now()
	limit := start.Add(maxWait)
	var deadline time.Time
	if dl, ok := ctx.Deadline(); ok {
		deadline = start.Add(time.Until(dl))
	}
	if ok, retry, err := l.hopeless(start, bounded, limit, deadline); !ok {
		return false, retry, err
	}

	// Queue behind this process's other waiters, unless a slot is free now: that one is taken
	// at once beside them, so an idle account's window goes out together rather than one round
	// trip after another.
	select {
	case l.turn <- struct{}{}:
	default:
		if ok, err := l.takeIfFree(ctx); err != nil {
			return false, l.o.ErrorRetry, err
		} else if ok {
			return true, 0, nil
		}
		var timeout <-chan time.Time
		if bounded {
			t := time.NewTimer(maxWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case l.turn <- struct{}{}:
		case <-ctx.Done():
			return false, 0, ctx.Err()
		case <-timeout:
			now := l.o.Now()
			l.mu.Lock()
			retry := l.localWaitLocked(now) + l.intervalLocked()
			l.mu.Unlock()
			l.countDenied()
			return false, retry, nil
		}
	}
	defer func() { <-l.turn }()

	for {
		now := l.o.Now()
		if ok, retry, err := l.hopeless(now, bounded, limit, deadline); !ok {
			return false, retry, err
		}
		horizon := l.o.MaxReserve
		if bounded {
			horizon = min(horizon, limit.Sub(now))
		}
		if !deadline.IsZero() {
			horizon = min(horizon, deadline.Sub(now))
		}
		horizon = max(horizon, 0)
		l.mu.Lock()
		attempt := l.notBefore.Add(-horizon)
		l.mu.Unlock()
		if d := attempt.Sub(now); d > 0 {
			if err := sleep(ctx, d); err != nil {
				return false, 0, err
			}
			continue
		}
		g, err := l.take(ctx, now, horizon)
		if err != nil {
			return false, l.o.ErrorRetry, err
		}
		if !g.allowed {
			continue // notBefore moved: hopeless or sleep, above
		}
		if g.wait > 0 {
			if err := sleep(ctx, g.wait); err != nil {
				l.release(g)
				return false, 0, err
			}
		}
		return true, 0, nil
	}
}

// takeIfFree takes a slot without waiting, and without reserving one ahead, when Redis said
// more than this process's other waiters are taking are free now.
func (l *Limiter) takeIfFree(ctx context.Context) (bool, error) {
	now := l.o.Now()
	l.mu.Lock()
	free := l.free > 0 && !l.notBefore.After(now)
	if free {
		l.free--
	}
	l.mu.Unlock()
	if !free {
		return false, nil
	}
	g, err := l.take(ctx, now, 0)
	return g.allowed, err
}

// hopeless reports (false, retryAfter, err) when local knowledge already says no token can be
// had within the caller's bound or before the context's deadline.
func (l *Limiter) hopeless(now time.Time, bounded bool, limit, deadline time.Time) (bool, time.Duration, error) {
	l.mu.Lock()
	earliest := now.Add(l.localWaitLocked(now))
	l.mu.Unlock()
	if !deadline.IsZero() && earliest.After(deadline) {
		l.countDenied()
		return false, earliest.Sub(now), fmt.Errorf("ratelimit %s: wait: %w", l.o.Name, ErrWouldExceedDeadline)
	}
	// An attempt that may succeed now is made even when the bound has just passed: the bound is
	// about waiting, and a zero one asks for a token without waiting.
	if bounded && earliest.After(now) && earliest.After(limit) {
		l.countDenied()
		return false, earliest.Sub(now), nil
	}
	return true, 0, nil
}

func (l *Limiter) countDenied() {
	l.mu.Lock()
	l.st.Denied++
	s := l.st
	l.mu.Unlock()
	l.observe(EventDenied, s)
}

// localWaitLocked is how long until an attempt could possibly succeed, as far as this process
// knows: the last free slot Redis told of.
func (l *Limiter) localWaitLocked(now time.Time) time.Duration {
	return max(l.notBefore.Sub(now), 0)
}

// intervalLocked is one slot at the current rate: the window divided by the grants it holds.
func (l *Limiter) intervalLocked() time.Duration {
	if l.st.CurrentRate <= 0 {
		return l.o.Rate.Per
	}
	return time.Duration(float64(time.Second) / l.st.CurrentRate)
}

// shared is the account's state as a script reported it.
type shared struct {
	rate     float64
	ceil     int
	coolLeft time.Duration
	margin   time.Duration
}

func (l *Limiter) applyLocked(now time.Time, sh shared) {
	l.st.CurrentRate = sh.rate
	l.st.LearnedCeiling = sh.ceil
	l.st.ArrivalMargin = sh.margin
	if sh.coolLeft > 0 {
		until := now.Add(sh.coolLeft)
		l.st.CooldownUntil = until
		l.notBefore = later(l.notBefore, until)
	}
}

// argv is ARGV 1-8, common to the take and throttle scripts.
func (l *Limiter) argv() []any {
	now := ""
	if l.scriptNow != nil {
		now = strconv.FormatInt(l.scriptNow().UnixMicro(), 10)
	}
	probe := l.o.ProbeAfter
	ttl := max(l.o.ProbeAfter, 10*l.o.Rate.Per) + 2*l.o.Rate.Per
	return []any{
		now,
		l.o.Rate.Events,
		l.o.Rate.Per.Microseconds(),
		l.span.Microseconds(),
		l.o.MinRate,
		increase,
		probe.Microseconds(),
		ttl.Milliseconds(),
	}
}

func parseTake(v []any) (grant, shared, error) {
	if len(v) != 9 {
		return grant{}, shared{}, fmt.Errorf("unexpected take reply of %d values", len(v))
	}
	allowed, ok1 := v[0].(int64)
	wait, err1 := micros(v[1])
	r, err2 := float(v[2])
	ceil, ok2 := v[3].(int64)
	cool, err3 := micros(v[4])
	member, _ := v[5].(string)
	next, err4 := micros(v[6])
	margin, err5 := micros(v[7])
	free, ok3 := v[8].(int64)
	if !ok1 || !ok2 || !ok3 {
		return grant{}, shared{}, fmt.Errorf("unexpected take reply %v", v)
	}
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return grant{}, shared{}, fmt.Errorf("unexpected take reply: %w", err)
	}
	return grant{allowed: allowed == 1, wait: wait, next: next, free: int(free), member: member},
		shared{rate: r, ceil: int(ceil), coolLeft: cool, margin: margin}, nil
}

func parseThrottle(v []any) (shared, error) {
	if len(v) != 5 {
		return shared{}, fmt.Errorf("unexpected throttle reply of %d values", len(v))
	}
	r, err1 := float(v[0])
	ceil, ok := v[1].(int64)
	cool, err2 := micros(v[2])
	margin, err3 := micros(v[4])
	if !ok {
		return shared{}, fmt.Errorf("unexpected throttle reply %v", v)
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return shared{}, fmt.Errorf("unexpected throttle reply: %w", err)
	}
	return shared{rate: r, ceil: int(ceil), coolLeft: cool, margin: margin}, nil
}

func micros(v any) (time.Duration, error) {
	s, _ := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return time.Duration(n) * time.Microsecond, nil
}

func float(v any) (float64, error) {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return f, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limiter) observe(kind EventKind, s Stats) {
	if l.o.Observer != nil {
		l.o.Observer.Observe(kind, s)
	}
}
