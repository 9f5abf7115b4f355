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
	// Short and lower-case, so it also makes a valid kontextq namespace. The process id has a
	// fixed width because cleanup matches the prefix anywhere in a key: with a variable width,
	// process 23's "kqt23-1-" would also match process 123's "kqt123-1-" keys, and a test in one
	// package would delete the keys of a test running at the same time in another.
	prefix := fmt.Sprintf("kqt%07d-%d-", os.Getpid(), seq.Add(1))
	tb.Logf("redistest: this test's keys hold %q", prefix)
	e := &Env{Client: c, Prefix: prefix, URL: url}
	tb.Cleanup(func() {
		if err := e.cleanup(); err != nil {
			tb.Errorf("redistest: %v", err)
		}
		_ = c.Close()
	})
	return e
}

// Keys lists the keys holding the test's prefix.
func (e *Env) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	// SCAN walks the whole keyspace whatever the pattern; large pages keep the round trips
	// few when the server holds many other keys.
	iter := e.Client.Scan(ctx, 0, "*"+e.Prefix+"*", 10000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// Cleanup deletes every key holding the test's prefix, and the prefix's entries in asynq's
// global queue set. It runs by itself when the test ends; call it to empty the test's keys
// earlier.
func (e *Env) Cleanup() { _ = e.cleanup() }

// cleanup reports what it could not delete, so that a leak fails the test that made it
// instead of piling up on a shared server. A minute is far more than a healthy server needs
// even when it holds millions of other keys.
func (e *Env) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := e.Keys(ctx)
	if err != nil {
		return fmt.Errorf("listing the keys holding %q: %w", e.Prefix, err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := e.Client.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("deleting the keys holding %q: %w", e.Prefix, err)
		}
		keys = keys[n:]
	}
	qs, err := e.Client.SMembers(ctx, "asynq:queues").Result()
	if err != nil {
		return fmt.Errorf("reading asynq's queue set: %w", err)
	}
	for _, q := range qs {
		if strings.Contains(q, e.Prefix) {
			if err := e.Client.SRem(ctx, "asynq:queues", q).Err(); err != nil {
				return fmt.Errorf("removing queue %s from asynq's queue set: %w", q, err)
			}
		}
	}
	return nil
}

func redact(url string) string {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s db %d", opt.Addr, opt.DB)
}
