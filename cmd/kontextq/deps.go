package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// newLogger builds the process's logger.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openRedis connects to cfg's Redis; the one client everything shares.
func openRedis(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	if cfg.RedisURL == "" {
		return nil, usageErr(fmt.Errorf("REDIS_URL (--redis-url) is not set: point it at a Redis server, e.g. redis://127.0.0.1:6379/0"))
	}
	opt, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, usageErr(fmt.Errorf("--redis-url (REDIS_URL): %v", err))
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("Redis at %s does not answer: %v", cfg.RedisURL, err)
	}
	return rdb, nil
}

func newKie(cfg config.Config) (*kie.Client, error) {
	c, err := kie.New(kie.Options{APIKey: cfg.KieAPIKey.Reveal(), BaseURL: cfg.KieBaseURL, UploadURL: cfg.KieUploadURL})
	if err != nil {
		return nil, usageErr(err)
	}
	return c, nil
}

// account identifies the Kie account for the shared rate limits without revealing its key.
func account(cfg config.Config) string {
	sum := sha256.Sum256([]byte("kontextq account\x00" + cfg.KieAPIKey.Reveal()))
	return hex.EncodeToString(sum[:8])
}

// limiters are the account's three budgets.
type limiters struct {
	submit, poll, transfer *ratelimit.Limiter
}

func newLimiters(rdb redis.UniversalClient, cfg config.Config) limiters {
	mk := func(name string, r ratelimit.Rate) *ratelimit.Limiter {
		return ratelimit.New(rdb, ratelimit.Options{Name: name, Account: account(cfg), Prefix: cfg.Namespace, Rate: r})
	}
	return limiters{
		submit:   mk("generate", cfg.Rate),
		poll:     mk("record-info", cfg.PollRate),
		transfer: mk("transfer", cfg.TransferRate),
	}
}

// newWorker builds a worker from the settings.
func newWorker(ctx context.Context, cfg config.Config, rdb redis.UniversalClient, log *slog.Logger, store archive.Store) (*worker.Worker, limiters, error) {
	kc, err := newKie(cfg)
	if err != nil {
		return nil, limiters{}, err
	}
	lim := newLimiters(rdb, cfg)
	var cb string
	if cfg.PublicURL != "" {
		cb = strings.TrimSuffix(cfg.PublicURL, "/") + "/kie/callback"
	}
	w, err := worker.New(worker.Options{
		Redis: rdb, Kie: kc, Store: store, Namespace: cfg.Namespace,
		SubmitLimiter: lim.submit, PollLimiter: lim.poll, TransferLimiter: lim.transfer,
		SubmitWorkers: cfg.SubmitWorkers, PollWorkers: cfg.PollWorkers, ArchiveWorkers: cfg.ArchiveWorkers,
		GenerationRetries: generationRetries(cfg.GenerationRetries),
		FirstPoll:         cfg.FirstPoll, PollInterval: cfg.PollInterval, PollTimeout: cfg.PollTimeout,
		Retention: cfg.Retention, ExpiryMargin: cfg.ExpiryMargin,
		CallbackURL: cb, Logger: log,
	})
	return w, lim, err
}

// generationRetries maps the setting (0 = none) to worker.Options (0 = default, <0 = none).
func generationRetries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func openStore(ctx context.Context, cfg config.Config) (archive.Store, error) {
	s, err := archive.Open(ctx, cfg.Archive)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--archive (KONTEXTQ_ARCHIVE): %w", err))
	}
	return s, nil
}

func parseRateFlag(flag, v string) (ratelimit.Rate, error) {
	r, err := ratelimit.ParseRate(v)
	if err != nil {
		return r, usageErr(fmt.Errorf("%s: %v", flag, err))
	}
	return r, nil
}
