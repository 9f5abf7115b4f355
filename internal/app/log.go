package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/config"
)

// NewLogger builds the process's logger from cfg's level and format, writing to w, and makes it
// go-redis's too.
func NewLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	var log *slog.Logger
	if cfg.LogFormat == "json" {
		log = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		log = slog.New(slog.NewTextHandler(w, opts))
	}
	redis.SetLogger(redisLog{log})
	return log
}

// SilenceRedis keeps go-redis quiet until a logger is built.
func SilenceRedis() { redis.SetLogger(redisLog{}) }

// redisLog passes go-redis's own messages to the process's logger at debug level. By default
// go-redis prints them to stderr in a format of its own, whatever --log-format says, and its
// dial retries repeat what the command's error already reports.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	if r.log == nil {
		return
	}
	r.log.DebugContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "from", "go-redis")
}
