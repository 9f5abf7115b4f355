package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/embedded"
	"github.com/kontextq/kontextq/internal/journal"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// newLogger builds the process's logger, and makes it go-redis's too.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
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

// openRedis connects to cfg's Redis; the one client everything shares.
func openRedis(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	if cfg.RedisURL == "" {
		return nil, usageErr(fmt.Errorf("REDIS_URL (--redis-url) is not set: point it at a Redis server, e.g. redis://127.0.0.1:6379/0 (only run and demo work without one)"))
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

// openRedisOrMemory is openRedis for the commands that can work alone (run, demo): without
// REDIS_URL they start an in-process Redis, and inMemory says so.
func openRedisOrMemory(ctx context.Context, cfg config.Config) (rdb redis.UniversalClient, inMemory bool, err error) {
	if cfg.RedisURL != "" {
		rdb, err := openRedis(ctx, cfg)
		return rdb, false, err
	}
	srv, err := embedded.Start()
	if err != nil {
		return nil, false, err
	}
	return memRedis{Client: srv.Client(), srv: srv}, true, nil
}

// openRunRedis opens run's Redis. Without REDIS_URL that is the in-process Redis, and the journal
// (see journalPath) stands in for the persistence it lacks; run says so on stderr.
//
// With a real Redis there is no journal: its ledger is durable (append-only file), and the other
// worker processes sharing it keep no journal, so one would be partial and could only disagree
// with the ledger.
func openRunRedis(ctx context.Context, cfg config.Config, stderr io.Writer) (redis.UniversalClient, *journal.Journal, error) {
	rdb, inMemory, err := openRedisOrMemory(ctx, cfg)
	if err != nil || !inMemory {
		return rdb, nil, err
	}
	path, err := journalPath(cfg.Archive, os.Getenv)
	if err == nil {
		var j *journal.Journal
		j, err = journal.Open(path)
		if err == nil {
			fmt.Fprintf(stderr, "no REDIS_URL: using an in-memory Redis; its state dies with this process (a journal in %s keeps what was paid)\n", filepath.Dir(path))
			return rdb, j, nil
		}
	}
	_ = rdb.Close()
	if errors.Is(err, journal.ErrLocked) {
		return nil, nil, usageErr(fmt.Errorf("another kontextq run is working on archive %s with an in-memory Redis (%w); "+
			"wait for it to finish, or give both the same REDIS_URL", cfg.Archive, err))
	}
	return nil, nil, err
}

// journalPath is where run keeps its journal without REDIS_URL: inside a local archive, as
// <archive>/.kontextq/journal.jsonl, beside the images whose payment it records (the archive's
// listings skip hidden names); for an S3 archive, in the user's state directory
// ($XDG_STATE_HOME, else ~/.local/state) as kontextq/journal-<hash of the location>.jsonl.
func journalPath(archiveLoc string, getenv func(string) string) (string, error) {
	dir := archiveLoc
	if strings.HasPrefix(archiveLoc, "file://") {
		dir = strings.TrimPrefix(strings.TrimPrefix(archiveLoc, "file://"), "localhost")
	} else if strings.Contains(archiveLoc, "://") {
		state := getenv("XDG_STATE_HOME")
		if state == "" {
			home := getenv("HOME")
			if home == "" {
				return "", fmt.Errorf("no directory for the journal of archive %s: set XDG_STATE_HOME or HOME, or use REDIS_URL", archiveLoc)
			}
			state = filepath.Join(home, ".local", "state")
		}
		sum := sha256.Sum256([]byte(archiveLoc))
		return filepath.Join(state, "kontextq", "journal-"+hex.EncodeToString(sum[:6])+".jsonl"), nil
	}
	return filepath.Join(dir, ".kontextq", "journal.jsonl"), nil
}

// withJournal gives the worker j (none when j is nil).
func withJournal(j *journal.Journal) func(*worker.Options) {
	return func(o *worker.Options) {
		if j != nil {
			o.Journal = j
		}
	}
}

// restoreFromJournal rebuilds, after the file is loaded into a new in-memory ledger, what the
// ledger lost with the previous process: jobs Kie holds tasks for are polled instead of paid
// again, and jobs whose call may have reached Kie unanswered are failed as interrupted. It does
// nothing without a journal.
func restoreFromJournal(ctx context.Context, j *journal.Journal, w *worker.Worker, batch string, out io.Writer) error {
	if j == nil {
		return nil
	}
	n := map[jobs.State]int{}
	for _, rec := range j.Records() {
		if rec.Ref.Batch != batch {
			continue
		}
		st, err := w.Restore(ctx, rec.Ref, worker.Paid{
			TaskID: rec.TaskID, Submissions: rec.Submissions, SubmittedAt: rec.SubmittedAt, InFlight: rec.InFlight,
		})
		if err != nil {
			return fmt.Errorf("restoring %s from journal %s: %w", rec.Ref, j.Path(), err)
		}
		n[st]++
	}
	if total := n[jobs.Submitted] + n[jobs.Archived] + n[jobs.Failed]; total > 0 {
		fmt.Fprintf(out, "journal: %d jobs were submitted before: %d already archived, %d resumed at Kie, %d interrupted (not sent again)\n",
			total, n[jobs.Archived], n[jobs.Submitted], n[jobs.Failed])
	}
	return nil
}

func newKie(cfg config.Config) (*kie.Client, error) {
	c, err := kie.New(kie.Options{APIKey: cfg.KieAPIKey.Reveal(), BaseURL: cfg.KieBaseURL, UploadURL: cfg.KieUploadURL})
	if err != nil {
		return nil, usageErr(err)
	}
	return c, nil
}

// checkKieKey asks Kie for the account's credits once, so that a wrong key is reported at start,
// naming the setting, instead of as an account paused for minutes while the batch waits. Only a
// refused key stops the command: Kie being slow or down is for the workers to ride out.
func checkKieKey(ctx context.Context, kc *kie.Client, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	credits, err := kc.Credits(cctx)
	var ke *kie.Error
	switch {
	case errors.As(err, &ke) && ke.Code == kie.CodeUnauthorized:
		return usageErr(fmt.Errorf("KIE_API_KEY (--kie-api-key): Kie.ai refused the key (%w); see https://kie.ai/api-key", err))
	case err != nil:
		log.Warn("could not check the Kie.ai key; going on", "err", err)
	case credits <= 0:
		log.Warn("the Kie.ai account has no credits: Kie refuses submissions until it is topped up", "credits", credits)
	}
	return nil
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
func newWorker(ctx context.Context, cfg config.Config, rdb redis.UniversalClient, log *slog.Logger, store archive.Store, opts ...func(*worker.Options)) (*worker.Worker, limiters, error) {
	kc, err := newKie(cfg)
	if err != nil {
		return nil, limiters{}, err
	}
	lim := newLimiters(rdb, cfg)
	var cb string
	if cfg.PublicURL != "" {
		cb = strings.TrimSuffix(cfg.PublicURL, "/") + "/kie/callback"
	}
	o := worker.Options{
		Redis: rdb, Kie: kc, Store: store, Namespace: cfg.Namespace,
		SubmitLimiter: lim.submit, PollLimiter: lim.poll, TransferLimiter: lim.transfer,
		SubmitWorkers: cfg.SubmitWorkers, PollWorkers: cfg.PollWorkers, ArchiveWorkers: cfg.ArchiveWorkers,
		GenerationRetries: generationRetries(cfg.GenerationRetries),
		FirstPoll:         cfg.FirstPoll, PollInterval: cfg.PollInterval, PollTimeout: cfg.PollTimeout,
		Retention: cfg.Retention, ExpiryMargin: cfg.ExpiryMargin, ResultTTL: cfg.ResultTTL, ArchiveOrigin: cfg.ArchiveOrigin,
		CallbackURL: cb, Logger: log,
	}
	for _, f := range opts {
		f(&o)
	}
	w, err := worker.New(o)
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

// session is what most commands start from: their settings, a logger, and the one Redis client
// everything in the process shares.
type session struct {
	cfg config.Config
	log *slog.Logger
	rdb redis.UniversalClient
}

// openSession loads cmd's settings (requiring the Kie key when needKey) and connects to Redis.
func openSession(cmd *cobra.Command, needKey bool) (*session, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if needKey {
		if err := cfg.RequireKieKey(); err != nil {
			return nil, usageErr(err)
		}
	}
	log := newLogger(cfg, cmd.ErrOrStderr())
	rdb, err := openRedis(cmd.Context(), cfg)
	if err != nil {
		return nil, err
	}
	return &session{cfg: cfg, log: log, rdb: rdb}, nil
}

func (s *session) Close() error { return s.rdb.Close() }

// checkArchiveWritable fails fast when a local archive directory cannot be written. Without the
// check a worker would submit and pay for every job, then retry each one's archiving until its
// result expired. A remote store is left to its first write.
func checkArchiveWritable(store archive.Store) error {
	l, ok := store.(*archive.Local)
	if !ok {
		return nil
	}
	dir := l.Location("")
	// A hidden name: the archive's listings skip it, and a leftover is never taken for an image.
	f, err := os.CreateTemp(dir, ".kontextq-write-check-*")
	if err != nil {
		return usageErr(fmt.Errorf("--archive (KONTEXTQ_ARCHIVE): cannot write to %s: %w", dir, err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

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
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := checkArchiveWritable(store); err != nil {
		store.Close()
		return nil, nil, err
	}
	kc, err := newKie(cfg)
	if err == nil {
		err = checkKieKey(ctx, kc, log)
	}
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, kc, nil
}
