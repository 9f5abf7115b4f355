// Package embedded runs an in-process Redis (miniredis) for `kontextq run` and `kontextq demo`
// when no REDIS_URL is given, so that a first batch needs no server.
//
// It serves the Redis protocol on a loopback port and callers connect an ordinary go-redis
// client to it, so asynq, the ledger and the limiter's Lua scripts run unchanged. miniredis
// answers TIME from the wall clock but only counts key TTLs down when told to: a goroutine
// advances them in step with real time, so asynq's expiring keys, the pause key and ledger
// retention behave as on a real server. Its state lives in memory and dies with the process;
// what must survive a crash (what Kie was paid for) is kept by the caller elsewhere, in a journal.
package embedded

import (
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// minTick is the finest step in which TTLs follow the clock. Advancing TTLs visits every key
// (miniredis sorts them), so the step grows with the data set to keep that cost near 5% of
// one core: see nextTick.
const minTick = 100 * time.Millisecond

// Server is a running in-process Redis.
type Server struct {
	mr        *miniredis.Miniredis
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Start starts an in-process Redis on a free loopback port.
func Start() (*Server, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting the in-memory Redis: %w", err)
	}
	s := &Server{mr: mr, stop: make(chan struct{}), done: make(chan struct{})}
	go s.drive()
	return s, nil
}

// drive counts TTLs down with the monotonic clock until Close.
func (s *Server) drive() {
	defer close(s.done)
	last := time.Now()
	wait := minTick
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		now := time.Now()
		s.mr.FastForward(now.Sub(last))
		last = now
		wait = nextTick(time.Since(now))
	}
}

// nextTick is the wait before the next TTL step, given how long the last one took: at least
// minTick, and twenty times the step's cost, so a large data set spends about 5% of a core on
// expiry and TTLs lag by at most a second or so.
func nextTick(cost time.Duration) time.Duration {
	return min(max(minTick, 20*cost), 2*time.Second)
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.mr.Addr() }

// URL is the server's address as a REDIS_URL.
func (s *Server) URL() string { return "redis://" + s.mr.Addr() + "/0" }

// Client returns a new client of the server; the caller closes it. It speaks RESP2 and skips
// CLIENT SETINFO, which miniredis does not need and would only answer with errors.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:            s.mr.Addr(),
		Protocol:        2,
		DisableIdentity: true,
		PoolSize:        64,
	})
}

// Close stops the server; its data is gone.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.mr.Close()
	})
	return nil
}
