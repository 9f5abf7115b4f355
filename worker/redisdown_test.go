package worker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// outage makes a Redis client fail every command while down, as an unreachable server would.
type outage struct{ down atomic.Bool }

var errUnreachable = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func (o *outage) DialHook(next redis.DialHook) redis.DialHook { return next }

func (o *outage) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if o.down.Load() {
			cmd.SetErr(errUnreachable)
			return errUnreachable
		}
		return next(ctx, cmd)
	}
}

func (o *outage) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if o.down.Load() {
			for _, c := range cmds {
				c.SetErr(errUnreachable)
			}
			return errUnreachable
		}
		return next(ctx, cmds)
	}
}

// A few seconds of unreachable Redis in the middle of a batch cost about their length and one
// probe interval, not the minutes asynq's lease recovery takes.
func TestRedisOutageCostsItsLength(t *testing.T) {
	if testing.Short() {
		t.Skip("takes Redis away for seconds mid-batch")
	}
	const (
		n    = 40
		down = 3 * time.Second
	)
	rate := ratelimit.Rate{Events: 20, Per: time.Second}
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: rate.Events, GenerateWindow: rate.Per, RecordInfoLimit: 100, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, GenTimeSigma: -1, Seed: 4,
	}})
	o := &outage{}
	c := redis.NewClient(b.env.Client.Options())
	c.AddHook(o)
	t.Cleanup(func() { c.Close() })
	w := b.another(t, worker.Options{Redis: c, FirstPoll: 300 * time.Millisecond, PollInterval: 300 * time.Millisecond})
	ws := []*worker.Worker{w}

	b.enqueue(t, batchOf("calm", n)...)
	calm, calmTook := b.runAll(t, ws, "calm", time.Minute)
	if calm.Archived != n {
		t.Fatalf("calm batch: %+v", calm)
	}
	accepted := b.sim.Stats().Accepted
	var ended atomic.Int64
	go func() {
		for b.sim.Stats().Accepted < accepted+10 {
			time.Sleep(5 * time.Millisecond)
		}
		o.down.Store(true)
		time.Sleep(down)
		o.down.Store(false)
		ended.Store(time.Now().UnixNano())
	}()
	b.enqueue(t, batchOf("redisdown", n)...)
	got, took := b.runAll(t, ws, "redisdown", 3*time.Minute)
	t.Logf("calm batch %s; with Redis unreachable for %s: %s", calmTook.Round(time.Millisecond), down, took.Round(time.Millisecond))
	if got.Archived != n {
		t.Errorf("batch with a Redis outage: %+v, want all %d archived", got, n)
	}
	if ended.Load() == 0 {
		t.Fatalf("the batch finished (%s) before Redis came back", took)
	}
	// Probes after 1 s, then 2 s and 4 s later: a 3 s outage ends at most 4 s before a probe
	// sees it has.
	b.checkCost(t, "the Redis outage", time.Unix(0, ended.Load()), 4*time.Second, rate, "calm", "redisdown")
	if st := b.sim.Stats(); st.LiveDuplicates != 0 {
		t.Errorf("%d tasks paid twice", st.LiveDuplicates)
	}
}
