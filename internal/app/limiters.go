package app

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/ratelimit"
)

// Limiters are the account's three budgets, shared through Redis by every process of the
// account in cfg's namespace.
type Limiters struct {
	Submit   *ratelimit.Limiter // generate calls (--rate)
	Poll     *ratelimit.Limiter // record-info calls (--poll-rate)
	Transfer *ratelimit.Limiter // downloads and uploads (--transfer-rate)
}

// All lists the limiters, for the rate gauges.
func (l Limiters) All() []*ratelimit.Limiter {
	return []*ratelimit.Limiter{l.Submit, l.Poll, l.Transfer}
}

// NewLimiters builds the account's limiters. Their keys are
// "<namespace>:ratelimit:{<account>/<budget>}", beside every other key of the namespace.
func NewLimiters(rdb redis.UniversalClient, cfg config.Config) Limiters {
	mk := func(name string, r ratelimit.Rate) *ratelimit.Limiter {
		return ratelimit.New(rdb, ratelimit.Options{Name: name, Account: Account(cfg), Prefix: cfg.Namespace + ":", Rate: r})
	}
	return Limiters{
		Submit:   mk("generate", cfg.Rate),
		Poll:     mk("record-info", cfg.PollRate),
		Transfer: mk("transfer", cfg.TransferRate),
	}
}

// Account identifies the Kie account for the shared rate limits without revealing its key.
func Account(cfg config.Config) string {
	sum := sha256.Sum256([]byte("kontextq account\x00" + cfg.KieAPIKey.Reveal()))
	return hex.EncodeToString(sum[:8])
}
