package redisconn_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redisconn"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// pipeline is a worker, the simulator and a local archive around one Redis client.
type pipeline struct {
	rdb    redis.UniversalClient
	sim    *kiesim.Server
	store  archive.Store
	w      *worker.Worker
	enq    *jobs.Enqueuer
	ledger *jobs.Ledger
}

const haBatch = "ha"

// newPipeline builds the worker through the composition root the binary uses, on the Redis
// that url names, opened as the binary opens REDIS_URL.
func newPipeline(t *testing.T, url string) *pipeline {
	t.Helper()
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second,
		RecordInfoLimit: 100, RecordInfoWindow: time.Second,
		GenTimeMedian: 400 * time.Millisecond, GenTimeSigma: 0.3,
		Seed: 11,
	})
	cfg := config.Default()
	cfg.RedisURL = config.SecretURL(url)
	cfg.KieAPIKey, cfg.KieBaseURL, cfg.KieUploadURL = config.Secret(sim.Key), sim.APIURL, sim.UploadURL
	cfg.Namespace = "kqha"
	cfg.Rate = ratelimit.Rate{Events: 20, Per: time.Second}
	cfg.PollRate = ratelimit.Rate{Events: 100, Per: time.Second}
	cfg.TransferRate = ratelimit.Rate{Events: 200, Per: time.Second}
	cfg.FirstPoll, cfg.PollInterval = 300*time.Millisecond, 300*time.Millisecond
	// The sweeper is what finds work a failover dropped: make it come round quickly.
	cfg.PollTimeout = 3 * time.Second
	rdb, err := app.OpenRedis(context.Background(), cfg)
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{rdb: rdb, sim: sim, store: store}
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: store, Logger: log}, func(o *worker.Options) {
		o.SweepInterval, o.SpoolDir = time.Second, t.TempDir()
	})
	if err != nil {
		t.Fatal(err)
	}
	p.w, p.ledger = w.Worker, w.Ledger()
	p.enq = jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: cfg.Namespace})
	t.Cleanup(func() { w.Close(); p.enq.Close(); store.Close() })
	return p
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (p *pipeline) load(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		s := jobs.Spec{Batch: haBatch, Prompt: fmt.Sprintf("a harbour at dawn, plate %d", i)}
		if _, err := p.enq.Enqueue(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}

// work runs the worker until the batch is done, calling during (when set) once with the
// counts each time they are read, until it returns true.
func (p *pipeline) work(t *testing.T, n int, timeout time.Duration, during func(jobs.Counts) bool) jobs.Counts {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	defer func() {
		if !t.Failed() {
			return
		}
		_ = p.ledger.Each(context.Background(), haBatch, func(j *jobs.Job) error {
			if !j.State.Terminal() {
				t.Logf("%s: %s task %s submissions %d submitting %v error %q", j.ID, j.State, j.TaskID, j.Submissions, j.Submitting, j.Error)
			}
			return nil
		})
	}()
	var c jobs.Counts
	eventually.Nil(t, timeout, "the batch to finish", func() error {
		cc, err := p.ledger.Counts(ctx, haBatch)
		if err != nil {
			return fmt.Errorf("counts %+v (last error %v)", c, err)
		}
		c = cc
		if during != nil && during(c) {
			during = nil
		}
		if !c.Done() {
			return fmt.Errorf("counts %+v", c)
		}
		return nil
	})
	return c
}

// check asserts what a user would notice: every image archived and verified, none paid twice.
func (p *pipeline) check(t *testing.T, n int, c jobs.Counts) {
	t.Helper()
	if c.Archived != int64(n) || c.Total != int64(n) {
		t.Errorf("counts %+v, want all %d archived", c, n)
	}
	ctx := context.Background()
	paid, files := 0, 0
	err := p.ledger.Each(ctx, haBatch, func(j *jobs.Job) error {
		paid += j.Submissions
		if j.State != jobs.Archived {
			return fmt.Errorf("%s is %s (%s)", j.ID, j.State, j.Error)
		}
		sc, err := archive.ReadSidecar(ctx, p.store, haBatch, j.ID)
		if err != nil {
			return fmt.Errorf("%s: sidecar: %w", j.ID, err)
		}
		ti, ok := p.sim.Task(sc.TaskID)
		if !ok || ti.ImageSHA256 != sc.SHA256 {
			return fmt.Errorf("%s: archived sha256 %s is not what the simulator served for task %s", j.ID, sc.SHA256, sc.TaskID)
		}
		data, err := os.ReadFile(j.Location)
		if err != nil || int64(len(data)) != sc.Bytes {
			return fmt.Errorf("%s: image %s: %v (%d bytes, sidecar says %d)", j.ID, j.Location, err, len(data), sc.Bytes)
		}
		files++
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if files != n {
		t.Errorf("%d images in the archive, want %d", files, n)
	}
	st := p.sim.Stats()
	if st.LiveDuplicates != 0 || st.DuplicateSubmissions != 0 {
		t.Errorf("paid twice: %d live duplicates, %d duplicate submissions", st.LiveDuplicates, st.DuplicateSubmissions)
	}
	if paid != st.Accepted || st.Accepted != n {
		t.Errorf("the ledger counts %d paid submissions, the simulator accepted %d, for %d jobs", paid, st.Accepted, n)
	}
}

// A batch worked on a three-master Redis Cluster: the ledger's scripts, the limiter's and asynq's
// all run there, and the batch ends with every image archived and none paid twice.
func TestBatchOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node Redis Cluster and runs a batch on it")
	}
	cl := redistest.StartCluster(t)
	p := newPipeline(t, cl.URL)
	if m := redisconn.ModeOf(p.rdb); m != redisconn.Cluster {
		t.Fatalf("%s opened as %s", cl.URL, m)
	}
	const n = 40
	p.load(t, n)
	c := p.work(t, n, 90*time.Second, nil)
	p.check(t, n, c)

	// One node's address is enough: the node says it is in a cluster.
	rdb, err := redisconn.Open(context.Background(), "redis://"+cl.Nodes[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if m := redisconn.ModeOf(rdb); m != redisconn.Cluster {
		t.Errorf("a cluster node's URL opened as %s", m)
	}
	l := jobs.NewLedger(rdb, jobs.LedgerOptions{Namespace: "kqha"})
	if got, err := l.Counts(context.Background(), haBatch); err != nil || got.Archived != n {
		t.Errorf("the batch read through one node's URL: %+v, %v", got, err)
	}
}

// A batch worked through a Sentinel failover: the master is killed mid-batch, the sentinels
// promote the replica, and the batch still ends with every image archived and none paid twice.
func TestBatchThroughSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis with Sentinels and fails the primary over mid-batch")
	}
	s := redistest.StartSentinel(t)
	p := newPipeline(t, s.URL)
	if m := redisconn.ModeOf(p.rdb); m != redisconn.Sentinel {
		t.Fatalf("%s opened as %s", s.URL, m)
	}
	const n = 60
	p.load(t, n)
	killed := time.Time{}
	c := p.work(t, n, 100*time.Second, func(c jobs.Counts) bool {
		// Mid-batch: some archived, some still to submit, tasks at Kie.
		if c.Archived < 10 || c.Submitted == 0 {
			return false
		}
		t.Logf("killing the master %s at %+v", s.Master.Addr, c)
		s.Master.Kill()
		killed = time.Now()
		return true
	})
	if killed.IsZero() {
		t.Fatal("the batch ended before the master was killed")
	}
	now := s.WaitFailover(t, s.Master.Addr, 30*time.Second)
	t.Logf("master now %s; batch done %s after the kill: %+v", now, time.Since(killed).Round(time.Millisecond), c)
	p.check(t, n, c)
}
