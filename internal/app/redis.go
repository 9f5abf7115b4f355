package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/embedded"
	"github.com/kontextq/kontextq/internal/redisconn"
)

// ErrNoRedis is returned (as a *ConfigError) by OpenRedis when no Redis is configured.
var ErrNoRedis = errors.New("REDIS_URL (--redis-url) is not set: point it at a Redis server, e.g. redis://127.0.0.1:6379/0 (only run and demo work without one)")

// OpenRedis connects to cfg's Redis and checks that it answers: the one client everything in a
// process shares, and the one place a Redis connection is opened.
func OpenRedis(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	if cfg.RedisURL == "" {
		return nil, configErr(ErrNoRedis)
	}
	// One node, Sentinel or Cluster, as the URL's form says (see package redisconn).
	t, err := redisconn.Parse(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, configErr(fmt.Errorf("--redis-url (REDIS_URL): %v", err))
	}
	rdb, err := t.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL (--redis-url): Redis at %s does not answer: %v", cfg.RedisURL, err)
	}
	return rdb, nil
}

// memRedis is a client of the in-process Redis; closing it stops the server, and its data is gone.
type memRedis struct {
	*redis.Client
	srv *embedded.Server
}

func (m memRedis) Close() error { return errors.Join(m.Client.Close(), m.srv.Close()) }

// OpenRedisOrMemory is OpenRedis for the commands that can work alone (run, demo): without
// REDIS_URL they start an in-process Redis, which closing the client stops, and inMemory says so.
func OpenRedisOrMemory(ctx context.Context, cfg config.Config) (rdb redis.UniversalClient, inMemory bool, err error) {
	if cfg.RedisURL != "" {
		rdb, err := OpenRedis(ctx, cfg)
		return rdb, false, err
	}
	srv, err := embedded.Start()
	if err != nil {
		return nil, false, err
	}
	return memRedis{Client: srv.Client(), srv: srv}, true, nil
}
