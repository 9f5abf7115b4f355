package ratelimit

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

// clock is a manual clock shared by the limiter's pacing and its scripts (in place of Redis
// TIME), so timing is tested without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_760_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
}

func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// bundle is one test's fixtures.
type bundle struct {
	env   *redistest.Env
	clock *clock
}

func setup(t testing.TB) *bundle {
	t.Helper()
	return &bundle{env: redistest.New(t), clock: newClock()}
}

// limiter is one "process" of the account: its own local state, the shared Redis state, and
// the bundle's clock for both.
func (b *bundle) limiter(o Options) *Limiter {
	if o.Name == "" {
		o.Name = "generate"
	}
	if o.Account == "" {
		o.Account = "acct1"
	}
	if o.Rate == (Rate{}) {
		o.Rate = Rate{20, 10 * time.Second}
	}
	o.Prefix = b.env.Prefix
	o.Now = b.clock.Now
	l := New(b.env.Client, o)
	l.scriptNow = b.clock.Now
	return l
}

// maxInWindow is the largest number of times in any closed window [t, t+per].
func maxInWindow(times []time.Time, per time.Duration) int {
	ts := append([]time.Time(nil), times...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) > per {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// result is the outcome of one attempt that does not wait.
type result struct {
	Allowed    bool
	RetryAfter time.Duration
}

// allow asks l for a token without waiting: WaitAtMost with no time to wait.
func allow(ctx context.Context, l *Limiter) (result, error) {
	ok, retry, err := l.WaitAtMost(ctx, 0)
	return result{Allowed: ok, RetryAfter: retry}, err
}
