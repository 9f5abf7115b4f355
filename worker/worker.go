// Package worker runs kontextq's jobs: asynq servers whose handlers submit jobs to Kie, poll their
// tasks, and archive the results, plus a sweeper that re-enqueues anything a crash or a lost task
// left behind.
//
// Every handler may run twice (asynq redelivers after crashes and shutdowns): each one reads the
// job's ledger record first and changes it only through conditional transitions, so a second run
// does nothing new and no job is ever submitted — paid for — twice. Submits run on their own
// asynq server so that submits waiting on the rate limiter never hold a slot that polls and
// archives need; archives outrank polls.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/ratelimit"
)

// Limiter is the rate limiter a handler waits on (ratelimit.Limiter).
type Limiter interface {
	// WaitAtMost waits up to max for a token; when none comes it reports when to come back.
	WaitAtMost(ctx context.Context, max time.Duration) (granted bool, retryAfter time.Duration, err error)
	// Throttled reports a 429 so every process of the account slows down.
	Throttled(ctx context.Context, retryAfter time.Duration) error
}

// Options configure a Worker. Zero values take the defaults named.
type Options struct {
	Redis     redis.UniversalClient // required; shared with everything else
	Kie       *kie.Client           // required
	Store     archive.Store         // required
	Namespace string                // "kontextq"

	SubmitLimiter   Limiter // generate calls; required
	PollLimiter     Limiter // record-info calls; required
	TransferLimiter Limiter // downloads and uploads; required

	SubmitWorkers  int // 4
	PollWorkers    int // 8
	ArchiveWorkers int // 4

	GenerationRetries int           // resubmissions after a failed generation (2); <0 means none
	FirstPoll         time.Duration // 8 s; the prior median generation time (see pollplan.go)
	PollInterval      time.Duration // 3 s; the longest wait between two polls of a task
	PollRate          float64       // record-info calls per second the poll limiter grants; 0: unknown
	SubmitRate        float64       // generate calls per second the submit limiter grants; 0: unknown
	PollTimeout       time.Duration // 15 min; after it, only the sweeper checks the task
	ResultTTL         time.Duration // how long a result URL is assumed to live (24 h)
	Retention         time.Duration // ledger retention of finished jobs (7 days)
	SweepInterval     time.Duration // 1 min
	ExpiryMargin      time.Duration // warn when an unarchived result expires within this (1 h)

	// ArchiveOrigin also archives Kie's originImageUrl beside the result, in the same archive
	// task (it lives 10 minutes). Failing to fetch it never fails the main image.
	ArchiveOrigin bool
	// EmbedMetadata inserts provenance (archive.EmbedProvenance) into each archived image; the
	// sidecar then records the hash of what Kie served beside the archived file's.
	EmbedMetadata bool

	// Prices are the credits one image of each model costs, as configured (--price). A model
	// without one is priced by measuring when a budget needs it (see budget.go).
	Prices map[string]float64

	// CallbackURL, when set, is sent as callBackUrl with every submission.
	CallbackURL string
	// SpoolDir holds downloads while they are verified (os.TempDir()).
	SpoolDir string
	// Journal, when set, durably records submissions outside Redis (see Journal).
	Journal Journal
	// Observer receives events for metrics (none by default).
	Observer Observer

	Logger *slog.Logger     // slog.Default()
	Now    func() time.Time // time.Now
}

// Journal is a durable record of submissions outside Redis, for an in-memory Redis that dies with
// the process: a restarted process restores from it which jobs Kie already holds (and which may
// have reached Kie), so none is paid for twice.
type Journal interface {
	// Submitting is called before a generate call is sent; an error stops the call.
	Submitting(r jobs.Ref) error
	// Submitted records the task id Kie answered.
	Submitted(r jobs.Ref, taskID string) error
}

func (o *Options) defaults() error {
	switch {
	case o.Redis == nil:
		return errors.New("worker: Options.Redis is required")
	case o.Kie == nil:
		return errors.New("worker: Options.Kie is required")
	case o.Store == nil:
		return errors.New("worker: Options.Store is required")
	case o.SubmitLimiter == nil || o.PollLimiter == nil || o.TransferLimiter == nil:
		return errors.New("worker: the submit, poll and transfer limiters are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Namespace == "" {
		o.Namespace = "kontextq"
	}
	defInt(&o.SubmitWorkers, 4)
	defInt(&o.PollWorkers, 8)
	defInt(&o.ArchiveWorkers, 4)
	if o.GenerationRetries == 0 {
		o.GenerationRetries = 2
	} else if o.GenerationRetries < 0 {
		o.GenerationRetries = 0
	}
	def(&o.FirstPoll, 8*time.Second)
	def(&o.PollInterval, 3*time.Second)
	def(&o.PollTimeout, 15*time.Minute)
	def(&o.ResultTTL, 24*time.Hour)
	def(&o.Retention, 7*24*time.Hour)
	def(&o.SweepInterval, time.Minute)
	def(&o.ExpiryMargin, time.Hour)
	if o.SpoolDir == "" {
		o.SpoolDir = os.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return nil
}

// shutdownTimeout is how long asynq lets running handlers finish after a stop before it
// cancels their contexts and puts their tasks back.
const shutdownTimeout = 10 * time.Second

// StopTimeout is the longest Run takes to return once its context ends: asynq's shutdown
// timeout, then the generate calls already sent, which are never cut off so that their task ids
// are recorded. A supervisor's grace period (systemd's TimeoutStopSec, compose's
// stop_grace_period, Kubernetes' terminationGracePeriodSeconds) must be longer, or a task Kie
// was paid for may go unrecorded.
const StopTimeout = shutdownTimeout + generateTimeout

// Worker is one worker process's share of the work.
type Worker struct {
	o       Options
	log     *slog.Logger
	ledger  *jobs.Ledger
	queues  jobs.Queues
	client  *asynq.Client // for the sweep only; a job's tasks go through tasks
	tasks   *jobs.Tasks
	pause   *pause
	storm   atomic.Int32 // server errors from Kie's API in a row (see refused)
	redis   *redisProbe
	stats   *genStats
	plan    pollPlan
	timers  atomic.Pointer[pollTimers] // set while Run runs
	prices  map[string]jobs.Credits    // configured
	submits sync.WaitGroup             // generate calls in flight; they outlive a shutdown so their task id is recorded

	id           string        // this process, as the owner of the dispatch lock
	dispatchWake chan struct{} // a submit slot freed: top the backlog up (see dispatch.go)
	yielding     atomic.Int64  // submit slots given up to higher-class tasks in the last token's time

	undeliveredMu sync.Mutex
	undelivered   []jobs.Dispatched // dispatched, but their tasks could not be queued yet
}

// New builds a Worker.
func New(o Options) (*Worker, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	w := &Worker{
		o:      o,
		log:    o.Logger,
		ledger: jobs.NewLedger(o.Redis, jobs.LedgerOptions{Namespace: o.Namespace, Retention: o.Retention, Now: o.Now}),
		queues: jobs.QueuesFor(o.Namespace),
		client: asynq.NewClientFromRedisClient(o.Redis),
		tasks:  jobs.NewTasks(o.Redis, jobs.TasksOptions{Namespace: o.Namespace, Now: o.Now}),
		pause:  &pause{rdb: o.Redis, key: o.Namespace + ":pause", now: o.Now},
		redis:  &redisProbe{rdb: o.Redis, log: o.Logger},
		plan:   pollPlan{prior: o.FirstPoll, maxInterval: o.PollInterval, rate: o.PollRate},
		prices: budgetPrices(o.Prices),

		id:           newToken(),
		dispatchWake: make(chan struct{}, 1),
	}
	w.stats = &genStats{rdb: o.Redis, key: w.ledger.Key, ttl: o.Retention}
	return w, nil
}

// resolution is how often asynq moves due tasks (scheduled polls, retried submits) to their
// queues, and how long an idle server waits before looking at its queues again (0.5 to 1.5
// times it): half the time between two generate tokens of the account, within 20 ms and 1 s.
// A poll timed to a learned generation time, an archive queued by a poll, or a submit retried
// when the next token frees then waits at most about one token's time at any time scale (Kie's
// 20 per 10 s: 0.25 s; 20 per 2 s: 0.05 s; the poll schedule's figures in pollplan.go count it),
// where asynq's 1 s defaults added up to 2.5 s to every result. The rate is read from the submit
// limiter when it reports one. Each check is one short script per queue.
func (w *Worker) resolution() time.Duration {
	d := time.Second
	if l, ok := w.o.SubmitLimiter.(interface{ Stats() ratelimit.Stats }); ok {
		if r := l.Stats().ConfiguredRate; r > 0 {
			d = time.Duration(float64(time.Second) / r / 2)
		}
	}
	return min(max(d, 20*time.Millisecond), time.Second)
}

// Ledger is the worker's ledger.
func (w *Worker) Ledger() *jobs.Ledger { return w.ledger }

// Queues are the worker's queue names.
func (w *Worker) Queues() jobs.Queues { return w.queues }

// Handler routes task types to handlers (exported for tests that drive one task at a time).
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.HandleFunc(jobs.TypeSubmit, w.handleSubmit)
	mux.HandleFunc(jobs.TypePoll, w.handlePoll)
	mux.HandleFunc(jobs.TypeArchive, w.handleArchive)
	mux.HandleFunc(jobs.TypeSweep, w.handleSweep)
	return w.waitOutRedis(mux)
}

// Run processes tasks until ctx is cancelled, then shuts down gracefully: running handlers get
// their context cancelled and a short grace period; generate calls already sent are waited for so
// their task ids reach the ledger.
func (w *Worker) Run(ctx context.Context) error {
	base := asynq.Config{
		IsFailure:                isFailure,
		RetryDelayFunc:           taskRetryDelay,
		DelayedTaskCheckInterval: w.resolution(),
		TaskCheckInterval:        w.resolution(),
		ShutdownTimeout:          shutdownTimeout,
		HealthCheckInterval:      15 * time.Second,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler:             asynq.ErrorHandlerFunc(w.logTaskError),
	}
	submitCfg := base
	submitCfg.Concurrency = w.o.SubmitWorkers
	submitCfg.Queues = map[string]int{w.queues.SubmitInteractive: 3, w.queues.SubmitNormal: 2, w.queues.Submit: 1}
	submitCfg.StrictPriority = true
	// Archives have slots of their own: a poll waiting on the poll budget holds its slot, so
	// archives sharing slots with polls would wait behind them whatever their priority. The
	// sweep runs there too, first: it is one short task per interval, and it is what warns when
	// archives fall behind. Poll slots take archives first as well, so an archive backlog gets
	// every slot the process has.
	archiveCfg := base
	archiveCfg.Concurrency = w.o.ArchiveWorkers
	archiveCfg.Queues = map[string]int{w.queues.Sweep: 9, w.queues.Archive: 6}
	archiveCfg.StrictPriority = true
	pollCfg := base
	pollCfg.Concurrency = w.o.PollWorkers
	pollCfg.Queues = map[string]int{w.queues.Archive: 6, w.queues.Poll: 3}
	pollCfg.StrictPriority = true

	timers := newPollTimers(ctx, w.o.PollWorkers)
	w.timers.Store(timers)
	defer func() {
		w.timers.Store(nil)
		timers.close()
	}()
	h := w.Handler()
	var servers []*asynq.Server
	stop := func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(s.Shutdown)
		}
		wg.Wait()
	}
	for _, c := range []struct {
		what string
		cfg  asynq.Config
	}{{"submit", submitCfg}, {"archive", archiveCfg}, {"poll", pollCfg}} {
		srv := asynq.NewServerFromRedisClient(w.o.Redis, c.cfg)
		if err := srv.Start(h); err != nil {
			stop()
			return fmt.Errorf("starting %s workers: %w", c.what, err)
		}
		servers = append(servers, srv)
	}
	sched, err := w.startSweeps(ctx)
	if err != nil {
		stop()
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { w.runDispatch(ctx) })

	<-ctx.Done()
	wg.Go(sched.Shutdown)
	wg.Go(stop)
	wg.Wait()
	w.submits.Wait()
	return nil
}

// AccountPause reports whether the account-wide pause holds (see PausedError), and its cause.
// A pause holds until a probe succeeds or the sweeper lifts it, whatever its next probe time.
func (w *Worker) AccountPause(ctx context.Context) (reason string, paused bool, err error) {
	pe, err := w.pause.get(ctx)
	if err != nil || pe == nil {
		return "", false, err
	}
	return pe.Cause.String(), true, nil
}

// Close releases the worker's queue clients (not the Redis client).
func (w *Worker) Close() error {
	// The asynq clients hold nothing but the caller's shared Redis client, which asynq refuses
	// to close; Tasks knows how to say so quietly.
	return w.tasks.Close()
}

func (w *Worker) logTaskError(ctx context.Context, t *asynq.Task, err error) {
	d := Classify(err)
	if d.Action == RetryLater {
		w.log.Debug("task postponed", "type", t.Type(), "payload", string(t.Payload()), "err", err)
		return
	}
	n, _ := asynq.GetRetryCount(ctx)
	maxN, _ := asynq.GetMaxRetry(ctx)
	w.log.Warn("task failed", "type", t.Type(), "payload", string(t.Payload()), "attempt", n+1, "max_retry", maxN, "action", d.Action.String(), "err", err)
}

// taskJob decodes a task's payload into p and reads the job it names. A nil job with a nil error
// means there is nothing to do: the ledger no longer holds the job (cancelled and expired, or
// never created). A payload that cannot be decoded is given up at once.
func (w *Worker) taskJob(ctx context.Context, t *asynq.Task, p any) (*jobs.Job, error) {
	if err := jobs.DecodePayload(t.Payload(), p); err != nil {
		return nil, fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	var ref jobs.Ref
	switch v := p.(type) {
	case *jobs.Payload:
		ref = v.Ref
	case *jobs.PollPayload:
		ref = v.Ref
	}
	j, err := w.ledger.Get(ctx, ref)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, nil
	}
	return j, err
}

// lastAttempt reports whether asynq will archive the task if this attempt fails.
func lastAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	m, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && n >= m
}

type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) {
	msg := fmt.Sprint(args...)
	if strings.Contains(msg, "connection is shared") {
		// Shutdown's attempt to close the client we share with it: expected, not an error.
		a.l.Debug(msg, "component", "asynq")
		return
	}
	a.l.Error(msg, "component", "asynq")
}
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq")
	os.Exit(1)
}
