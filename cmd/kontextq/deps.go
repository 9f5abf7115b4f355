package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/journal"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

// openRunJournal opens run's journal when its Redis is the in-process one (inMemory): the
// journal (see app.JournalPath) stands in for the persistence it lacks, and run says so on
// stderr. It is opened after the key and Redis are known good, since it creates the archive's
// directory.
//
// With a real Redis there is no journal: its ledger is durable (append-only file), and the other
// worker processes sharing it keep no journal, so one would be partial and could only disagree
// with the ledger.
func openRunJournal(cfg config.Config, inMemory bool, stderr io.Writer) (*journal.Journal, error) {
	if !inMemory {
		return nil, nil
	}
	path, err := app.JournalPath(cfg.Archive, os.Getenv)
	if err != nil {
		return nil, err
	}
	j, err := journal.Open(path)
	if errors.Is(err, journal.ErrLocked) {
		return nil, usageErr(fmt.Errorf("another kontextq run is working on archive %s with an in-memory Redis (%w); "+
			"wait for it to finish, or give both the same REDIS_URL", cfg.Archive, err))
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "no REDIS_URL: using an in-memory Redis; its state dies with this process (a journal in %s keeps what was paid)\n", filepath.Dir(path))
	return j, nil
}

// session is what most commands start from: their settings, a logger, and the one Redis client
// everything in the process shares.
type session struct {
	cfg config.Config
	log *slog.Logger
	rdb redis.UniversalClient
}

// openSession loads cmd's settings (requiring the Kie key when needKey) and connects to Redis.
func openSession(cmd *cobra.Command, withKey bool) (*session, error) {
	needs := []need{needRedis}
	if withKey {
		needs = append(needs, needKey)
	}
	cfg, err := loadConfig(cmd, needs...)
	if err != nil {
		return nil, err
	}
	log := app.NewLogger(cfg, cmd.ErrOrStderr())
	rdb, err := app.OpenRedis(cmd.Context(), cfg)
	if err != nil {
		return nil, err
	}
	return &session{cfg: cfg, log: log, rdb: rdb}, nil
}

func (s *session) Close() error { return s.rdb.Close() }

func (s *session) ledger() *jobs.Ledger {
	return jobs.NewLedger(s.rdb, jobs.LedgerOptions{Namespace: s.cfg.Namespace, Retention: s.cfg.Retention})
}

// batchLedger is the ledger and the batch's counts, once batch is known to be in it.
func (s *session) batchLedger(ctx context.Context, batch string) (*jobs.Ledger, jobs.Counts, error) {
	l := s.ledger()
	c, err := l.Counts(ctx, batch)
	if err != nil {
		return nil, c, err
	}
	if c.Total == 0 {
		return nil, c, usageErr(fmt.Errorf("batch %q: not in the ledger of namespace %s (kontextq status lists the batches)", batch, s.cfg.Namespace))
	}
	return l, c, nil
}

// openWorkTargets opens what a process that works jobs talks to, failing early (exit 2) on what
// would otherwise fail every job: an archive that cannot be written, a key Kie refuses.
func openWorkTargets(ctx context.Context, cfg config.Config, log *slog.Logger) (archive.Store, *kie.Client, error) {
	// The key first: a refused key must not leave an archive directory behind.
	kc, err := app.NewKie(cfg)
	if err == nil {
		err = app.CheckKieKey(ctx, kc, log)
	}
	if err != nil {
		return nil, nil, err
	}
	store, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := app.CheckArchiveWritable(store); err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, kc, nil
}
