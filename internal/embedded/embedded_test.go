package embedded_test

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/embedded"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

func start(t *testing.T) (*embedded.Server, *redis.Client) {
	t.Helper()
	s, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// Keys expire in real time, as on a real server: asynq's locks and heartbeats, the account pause
// and ledger retention depend on it. The point is to follow the wall clock, so the test waits on
// it (briefly).
func TestKeysExpireWithTheClock(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	if err := c.Set(ctx, "short", "x", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "long", "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "at", "x", 0)
	if err := c.PExpireAt(ctx, "at", time.Now().Add(400*time.Millisecond)).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, "short", "at").Result(); n != 2 {
		t.Fatalf("%d of 2 keys exist right after SET", n)
	}
	eventually.True(t, 3*time.Second, "keys with a 300-400 ms TTL to expire", func() bool {
		n, _ := c.Exists(ctx, "short", "at").Result()
		return n == 0
	})
	if ttl, _ := c.PTTL(ctx, "long").Result(); ttl < 59*time.Minute || ttl > time.Hour {
		t.Errorf("a one-hour key has TTL %s", ttl)
	}
}

// TIME follows the wall clock: the limiter's scripts decide on it.
func TestTimeIsWallClock(t *testing.T) {
	_, c := start(t)
	got, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(got); d < -time.Second || d > time.Second {
		t.Errorf("TIME is %s off the wall clock", d)
	}
}

// The limiter's Lua (TIME, unpack, string.format) runs on miniredis and shares one budget
// between processes.
func TestLimiterScripts(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	cfg := config.Default()
	cfg.KieAPIKey, cfg.Namespace, cfg.Rate = "a", "t", ratelimit.Rate{Events: 2, Per: time.Second}
	mk := func() *ratelimit.Limiter { return app.NewLimiters(c, cfg).Submit }
	one, two := mk(), mk() // two processes of one account
	for i, l := range []*ratelimit.Limiter{one, two} {
		if ok, retry, err := l.WaitAtMost(ctx, 0); err != nil || !ok {
			t.Fatalf("grant %d of an idle account's window of 2: %v, %v, %v", i+1, ok, retry, err)
		}
	}
	if ok, retry, err := two.WaitAtMost(ctx, 0); err != nil || ok || retry <= 0 {
		t.Fatalf("a third grant within the window: %v, %v, %v; want a denial with a wait", ok, retry, err)
	}
	if err := two.Throttled(ctx, 0); err != nil {
		t.Fatalf("Throttled: %v", err)
	}
	if st := two.Stats(); !st.CooldownUntil.After(time.Now()) {
		t.Errorf("a 429 started no cool-down: %+v", st)
	}
}

// The whole worker pipeline — ledger, asynq servers, limiters, uploads, archive — works on the
// in-memory Redis against the simulator, and the dashboard's queries (asynq's Inspector) answer.
func TestPipeline(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	// The account allows 60% more than the workers are told: calls spaced exactly at the
	// limit can reach Kie bunched on a loaded machine and draw a lone 429, which the limiter
	// accepts by design; with headroom, any 429 means the limiter did not hold (told far more
	// than the account allows, the workers draw several).
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 16, GenerateWindow: time.Second, RecordInfoLimit: 64, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, Seed: 5,
	})
	dir := t.TempDir()
	store, err := archive.NewLocal(filepath.Join(dir, "archive"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := config.Default()
	cfg.KieAPIKey, cfg.KieBaseURL, cfg.KieUploadURL = config.Secret(sim.Key), sim.APIURL, sim.UploadURL
	cfg.Namespace = "kq"
	cfg.Rate = ratelimit.Rate{Events: 10, Per: time.Second}
	cfg.PollRate = ratelimit.Rate{Events: 40, Per: time.Second}
	cfg.TransferRate = ratelimit.Rate{Events: 20, Per: time.Second}
	cfg.FirstPoll, cfg.PollInterval = 300*time.Millisecond, 300*time.Millisecond
	cfg.GenerationRetries = 0 // none
	w, err := app.NewWorker(cfg, app.Deps{Redis: c, Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func(o *worker.Options) { o.SpoolDir = t.TempDir() })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	enq := jobs.NewEnqueuer(c, jobs.EnqueuerOptions{Namespace: "kq"})
	defer enq.Close()

	input := filepath.Join(dir, "in.png")
	writePNG(t, input)
	const n = 24
	for i := range n {
		s := jobs.Spec{Batch: "b", Prompt: fmt.Sprintf("a red kite over dunes, take %d", i), OutputFormat: []string{"jpeg", "png"}[i%2]}
		if i%6 == 0 {
			s.InputImage = input // an edit of a local file: uploaded first
		}
		if _, err := enq.Enqueue(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	// The dispatcher's scripts run here too: it hands a few jobs to asynq.
	const backlog = 8
	if got, err := w.Dispatch(ctx, backlog); err != nil || got != backlog {
		t.Fatalf("Dispatch: %d jobs, %v; want %d", got, err, backlog)
	}
	// The queries the dashboard makes, while the queue holds work.
	insp := asynq.NewInspectorFromRedisClient(c)
	defer insp.Close()
	qs, err := insp.Queues()
	if err != nil || len(qs) == 0 {
		t.Fatalf("Inspector.Queues: %v, %v", qs, err)
	}
	submitQ := w.Queues().SubmitFor(enq.Priority())
	qi, err := insp.GetQueueInfo(submitQ)
	if err != nil {
		t.Fatalf("Inspector.GetQueueInfo: %v", err)
	}
	if qi.Pending != backlog {
		t.Errorf("queue info says %d pending, want %d", qi.Pending, backlog)
	}
	if ts, err := insp.ListPendingTasks(submitQ, asynq.PageSize(5)); err != nil || len(ts) != 5 {
		t.Errorf("Inspector.ListPendingTasks: %d tasks, %v", len(ts), err)
	}

	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var counts jobs.Counts
	eventually.True(t, time.Minute, "the batch to finish", func() bool {
		counts, _ = w.Ledger().Counts(ctx, "b")
		return counts.Done()
	})
	if _, err := insp.History(submitQ, 1); err != nil {
		t.Errorf("Inspector.History: %v", err)
	}
	if _, err := insp.Servers(); err != nil {
		t.Errorf("Inspector.Servers: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("worker: %v", err)
	}

	if counts.Archived != n {
		t.Errorf("counts %+v, want all %d archived", counts, n)
	}
	st := sim.Stats()
	if st.DuplicateSubmissions != 0 || st.RateLimited != 0 {
		t.Errorf("simulator saw %d duplicate submissions and %d 429s; want none", st.DuplicateSubmissions, st.RateLimited)
	}
	if st.Uploads == 0 {
		t.Error("no edit uploaded its local input image")
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "archive", "b", "*.*g"))
	if len(imgs) != n {
		t.Errorf("%d images on disk, want %d", len(imgs), n)
	}
}

func writePNG(t *testing.T, path string) {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	for i := range 16 {
		img.SetNRGBA(i, i, color.NRGBA{R: 200, A: 255})
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNextTick(t *testing.T) {
	for _, c := range []struct {
		cost, want time.Duration
	}{
		{0, 100 * time.Millisecond},
		{time.Millisecond, 100 * time.Millisecond},
		{10 * time.Millisecond, 200 * time.Millisecond},
		{50 * time.Millisecond, time.Second},
		{time.Second, 2 * time.Second},
	} {
		if got := embedded.NextTick(c.cost); got != c.want {
			t.Errorf("after a step costing %s: next in %s, want %s", c.cost, got, c.want)
		}
	}
}
