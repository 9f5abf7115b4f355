package app

import (
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/worker"
)

// Deps are what a worker is given rather than built from the settings.
type Deps struct {
	// Redis is the process's one client; required.
	Redis redis.UniversalClient
	// Store is the archive; required (a process that archives nothing passes one that refuses).
	Store archive.Store
	// Kie is the client to use; nil builds one from the settings.
	Kie *kie.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Journal, Observer: see worker.Options; optional.
	Journal  worker.Journal
	Observer worker.Observer
}

// Worker is a worker with the parts it was built from that others show or reuse.
type Worker struct {
	*worker.Worker
	Limiters Limiters
	Kie      *kie.Client
}

// NewWorker builds the worker cfg describes: its Kie client, the account's limiters, and the
// settings of every task. adjust, when given, changes the options last (tests set clocks and
// intervals the settings do not have).
func NewWorker(cfg config.Config, d Deps, adjust ...func(*worker.Options)) (*Worker, error) {
	kc := d.Kie
	if kc == nil {
		var err error
		if kc, err = NewKie(cfg); err != nil {
			return nil, err
		}
	}
	lim := NewLimiters(d.Redis, cfg)
	o := WorkerOptions(cfg)
	o.Redis, o.Kie, o.Store = d.Redis, kc, d.Store
	o.SubmitLimiter, o.PollLimiter, o.TransferLimiter = lim.Submit, lim.Poll, lim.Transfer
	o.Logger, o.Journal, o.Observer = d.Logger, d.Journal, d.Observer
	for _, f := range adjust {
		f(&o)
	}
	w, err := worker.New(o)
	if err != nil {
		return nil, err
	}
	return &Worker{Worker: w, Limiters: lim, Kie: kc}, nil
}

// WorkerOptions are the worker settings of cfg, without the parts NewWorker builds.
func WorkerOptions(cfg config.Config) worker.Options {
	var cb string
	if cfg.PublicURL != "" {
		cb = strings.TrimSuffix(cfg.PublicURL, "/") + "/kie/callback"
	}
	retries := cfg.GenerationRetries // the setting's 0 is none; worker.Options' is the default
	if retries == 0 {
		retries = -1
	}
	return worker.Options{
		Namespace:     cfg.Namespace,
		SubmitWorkers: cfg.SubmitWorkers, PollWorkers: cfg.PollWorkers, ArchiveWorkers: cfg.ArchiveWorkers,
		GenerationRetries: retries,
		FirstPoll:         cfg.FirstPoll, PollInterval: cfg.PollInterval, PollTimeout: cfg.PollTimeout,
		PollRate:   pollRate(cfg),
		SubmitRate: cfg.Rate.PerSecond(),
		Retention:  cfg.Retention, ExpiryMargin: cfg.ExpiryMargin, ResultTTL: cfg.ResultTTL, ArchiveOrigin: cfg.ArchiveOrigin,
		EmbedMetadata: cfg.EmbedMetadata,
		Prices:        cfg.Prices,
		CallbackURL:   cb,
	}
}

// pollRate is the poll budget in calls per second (0 when unset).
func pollRate(cfg config.Config) float64 {
	if cfg.PollRate.Events <= 0 || cfg.PollRate.Per <= 0 {
		return 0
	}
	return float64(cfg.PollRate.Events) / cfg.PollRate.Per.Seconds()
}
