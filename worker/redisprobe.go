package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// An unreachable Redis cannot hold a pause, so each process waits it out on its own: a handler
// whose task failed while Redis does not answer waits, in the handler, until one probe of the
// process gets an answer (after 1 s, then twice as long each time, up to redisProbeCap), and
// only then hands its task back to asynq, to run again a second later without counting a
// failure. asynq cannot record the outcome of a task while Redis is down, and does not try
// again once it is back: the task would stay active until its lease ran out and the recoverer
// took it, a minute or two later.
const (
	redisProbeFirst = time.Second
	redisProbeCap   = 8 * time.Second
	// maxRedisWait bounds the wait so that the task's asynq lease (30 s, not extended while
	// Redis is down) is still valid when the handler returns.
	maxRedisWait = 20 * time.Second
	pingTimeout  = time.Second
)

type redisProbe struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu      sync.Mutex
	up      chan struct{} // closed when Redis answers again; nil while no probe runs
	waiters int
}

func (p *redisProbe) reachable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
	defer cancel()
	return p.rdb.Ping(ctx).Err() == nil
}

// wait blocks until Redis answers a probe, ctx ends or maxWait passes, and reports whether
// Redis answered.
func (p *redisProbe) wait(ctx context.Context, maxWait time.Duration) bool {
	p.mu.Lock()
	if p.up == nil {
		p.up = make(chan struct{})
		p.log.Warn("Redis unreachable; tasks wait for it", "first_probe_in", redisProbeFirst)
		go p.probe(p.up)
	}
	up := p.up
	p.waiters++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}()
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case <-up:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// probe pings Redis at growing intervals until it answers, or until nobody waits any more.
func (p *redisProbe) probe(up chan struct{}) {
	for d := redisProbeFirst; ; d = min(2*d, redisProbeCap) {
		time.Sleep(d)
		ok := p.reachable(context.Background())
		p.mu.Lock()
		if ok || p.waiters == 0 {
			p.up = nil
			close(up)
			p.mu.Unlock()
			if ok {
				p.log.Info("Redis answers again; tasks resume")
			}
			return
		}
		p.mu.Unlock()
	}
}

// waitOutRedis wraps the handlers: a task that failed while Redis was unreachable is handed
// back only once Redis answers, as a wait that is not a failure.
func (w *Worker) waitOutRedis(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := h.ProcessTask(ctx, t)
		if err == nil || ctx.Err() != nil || w.redis.reachable(ctx) {
			return err
		}
		if !w.redis.wait(ctx, maxRedisWait) {
			return err
		}
		return &RateLimitedError{RetryAfter: time.Second, Why: "Redis was unreachable", Err: err}
	})
}
