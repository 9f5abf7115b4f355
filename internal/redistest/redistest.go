// Package redistest gives tests a real Redis server, isolated by key prefix.
//
// The server comes from TEST_REDIS_URL, else REDIS_URL, else redis://127.0.0.1:6379/0.
// Each test gets its own prefix; every key holding it is deleted when the test ends, so tests
// run in parallel on one server and never touch data they did not create. When no server
// answers, the test is skipped, unless CI is set: then it fails, because a CI run that skips
// every Redis test proves nothing.
package redistest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Env is one test's view of Redis.
type Env struct {
	// Client is connected to the test server; it is closed when the test ends.
	Client *redis.Client
	// Prefix is unique to this test, lower-case and short (a valid namespace once a few letters
	// are added). Use it in key prefixes and asynq queue names: every key containing it is
	// removed at cleanup.
	Prefix string
	// URL is the server's URL, for code under test that dials Redis itself (subprocesses).
	URL string
}

var seq atomic.Int64

// URL returns the Redis URL tests should use.
func URL() string {
	for _, k := range []string{"TEST_REDIS_URL", "REDIS_URL"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "redis://127.0.0.1:6379/0"
}

// New connects to the test Redis server and registers cleanup of the test's keys.
func New(tb testing.TB) *Env {
	tb.Helper()
	url := URL()
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("redistest: bad Redis URL: %v", err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("CI") != "" {
			tb.Fatalf("redistest: Redis at %s does not answer (%v); CI requires a real Redis", redact(url), err)
		}
		tb.Skipf("redistest: Redis at %s does not answer (%v); set TEST_REDIS_URL", redact(url), err)
	}
	// Short and lower-case, so it also makes a valid kontextq namespace.
	prefix := fmt.Sprintf("kqt%d-%d-", os.Getpid(), seq.Add(1))
	e := &Env{Client: c, Prefix: prefix, URL: url}
	tb.Cleanup(func() {
		e.Cleanup()
		_ = c.Close()
	})
	return e
}

// Keys lists the keys holding the test's prefix.
func (e *Env) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	iter := e.Client.Scan(ctx, 0, "*"+e.Prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// Cleanup deletes every key holding the test's prefix, and the prefix's entries in asynq's
// global queue set.
func (e *Env) Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, _ := e.Keys(ctx)
	for len(keys) > 0 {
		n := min(len(keys), 500)
		e.Client.Unlink(ctx, keys[:n]...)
		keys = keys[n:]
	}
	if qs, err := e.Client.SMembers(ctx, "asynq:queues").Result(); err == nil {
		for _, q := range qs {
			if strings.Contains(q, e.Prefix) {
				e.Client.SRem(ctx, "asynq:queues", q)
			}
		}
	}
}

func redact(url string) string {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s db %d", opt.Addr, opt.DB)
}
