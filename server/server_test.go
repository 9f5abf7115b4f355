package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/server"
	"github.com/kontextq/kontextq/worker"
)

const (
	testToken = "s3cret-api-token"
	testHMAC  = "webhook-hmac-key"
)

// fixture is one test's server: real Redis, the simulator behind a real (not running) worker
// as the Checker, and the server on a loopback httptest listener.
type fixture struct {
	env    *redistest.Env
	ns     string
	sim    *kiesim.Server
	srv    *server.Server
	url    string
	enq    *jobs.Enqueuer
	ledger *jobs.Ledger
	w      *worker.Worker
	wopts  worker.Options
	insp   *asynq.Inspector
	queues jobs.Queues
}

type fixtureOpts struct {
	server func(*server.Options) // adjusts the server's options
	worker func(*worker.Options) // adjusts the worker's options
	sim    kiesim.Options
}

func setup(t *testing.T, fo fixtureOpts) *fixture {
	t.Helper()
	env := redistest.New(t)
	ns := env.Prefix + "ns"
	sim := kietest.NewServer(t, fo.sim)
	kc, err := kie.New(kie.Options{APIKey: sim.Key, BaseURL: sim.APIURL, UploadURL: sim.UploadURL})
	if err != nil {
		t.Fatal(err)
	}
	store, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The worker is built through the composition root the binary uses.
	cfg := config.Default()
	cfg.KieAPIKey, cfg.Namespace = "test", ns
	cfg.Rate = ratelimit.Rate{Events: 20, Per: 10 * time.Second}
	cfg.PollRate = ratelimit.Rate{Events: 10, Per: time.Second}
	cfg.TransferRate = ratelimit.Rate{Events: 100, Per: time.Second}
	wo := app.WorkerOptions(cfg)
	wo.SpoolDir, wo.Logger = t.TempDir(), log
	if fo.worker != nil {
		fo.worker(&wo)
	}
	// The server's URL is needed for the callback URL before the server exists.
	var handler http.Handler
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(hs.Close)
	if wo.CallbackURL == "" {
		wo.CallbackURL = hs.URL + "/kie/callback"
	}
	aw, err := app.NewWorker(cfg, app.Deps{Redis: env.Client, Kie: kc, Store: store}, func(o *worker.Options) {
		own := wo
		own.Redis, own.Kie, own.Store = o.Redis, o.Kie, o.Store
		own.SubmitLimiter, own.PollLimiter, own.TransferLimiter = o.SubmitLimiter, o.PollLimiter, o.TransferLimiter
		*o = own
	})
	if err != nil {
		t.Fatal(err)
	}
	w := aw.Worker
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: ns})
	connOpt, err := asynq.ParseRedisURI(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	so := server.Options{
		Redis: env.Client, RedisConnOpt: connOpt, Namespace: ns,
		Enqueuer: enq, Checker: w, Credits: kc,
		Limiters: []server.StatsSource{aw.Limiters.Submit},
		APIToken: testToken, HMACKey: []byte(testHMAC), Loopback: true,
		Logger: log,
	}
	if fo.server != nil {
		fo.server(&so)
	}
	srv, err := server.New(so)
	if err != nil {
		t.Fatal(err)
	}
	handler = srv
	insp := asynq.NewInspectorFromRedisClient(env.Client)
	q := jobs.QueuesFor(ns)
	t.Cleanup(func() {
		srv.Close()
		w.Close()
		enq.Close()
		insp.Close()
		store.Close()
		// Queue names live in asynq's shared set, which the key cleanup does not touch.
		env.Client.SRem(context.Background(), "asynq:queues", q.Submit, q.Poll, q.Archive, q.Sweep)
	})
	return &fixture{env: env, ns: ns, sim: sim, srv: srv, url: hs.URL, enq: enq, ledger: enq.Ledger(), w: w, wopts: wo, insp: insp, queues: q}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// do sends a request and returns the status and body.
func (f *fixture) do(t *testing.T, method, path, contentType, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

var bearer = []string{"Authorization", "Bearer " + testToken}

// post sends a job body with the token.
func (f *fixture) post(t *testing.T, path, contentType, body string) (int, []byte) {
	t.Helper()
	return f.do(t, "POST", path, contentType, body, bearer...)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("answer is not the JSON expected: %v\n%s", err, b)
	}
	return v
}

type errorAnswer struct {
	Error    string `json:"error"`
	Problems []struct {
		Line    int    `json:"line"`
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"problems"`
}

// queued reports how many jobs a batch holds and how many submit tasks wait in the queue.
func (f *fixture) queued(t *testing.T, batch string) (jobsInLedger int64, inLine int64) {
	t.Helper()
	c, err := f.ledger.Counts(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := f.ledger.Waiting(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range waiting {
		if w.Batch == batch {
			inLine += w.Jobs
		}
	}
	return c.Total, inLine
}

func (f *fixture) queueExists(t *testing.T, q string) bool {
	t.Helper()
	qs, err := f.insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(qs, q)
}

// submitted records a job as submitted to Kie under taskID, as a worker would.
func (f *fixture) submitted(t *testing.T, batch, prompt, taskID string) jobs.Ref {
	t.Helper()
	ctx := context.Background()
	out, err := f.enq.Enqueue(ctx, jobs.Spec{Batch: batch, Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.ledger.RecordSubmitted(ctx, out.Ref, taskID); err != nil || !ok {
		t.Fatalf("recording submission: %v %v", ok, err)
	}
	return out.Ref
}

// checks returns the ids of the check tasks waiting in the poll queue.
func (f *fixture) checks(t *testing.T) []string {
	t.Helper()
	if !f.queueExists(t, f.queues.Poll) {
		return nil
	}
	tasks, err := f.insp.ListPendingTasks(f.queues.Poll)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range tasks {
		if strings.HasPrefix(ti.ID, "check:") {
			ids = append(ids, ti.ID)
		}
	}
	return ids
}

func TestNewRefusesToRunWithoutToken(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: env.Prefix + "ns"})
	defer enq.Close()
	for _, tc := range []struct {
		name               string
		loopback, insecure bool
		ok                 bool
	}{
		{"public, no flag", false, false, false},
		{"public, told insecure", false, true, false},
		{"loopback, not told", true, false, false},
		{"loopback, told insecure", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := server.New(server.Options{Redis: env.Client, Enqueuer: enq, Checker: nopChecker{},
				Loopback: tc.loopback, InsecureNoToken: tc.insecure})
			if tc.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if !errors.Is(err, server.ErrNoToken) {
				t.Fatalf("New without a token: got %v, want ErrNoToken", err)
			}
		})
	}
}

type nopChecker struct{}

func (nopChecker) Check(context.Context, jobs.Ref) error { return nil }

func TestServeRefusesPublicAddressWhenBuiltForLoopback(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	err := f.srv.Serve(context.Background(), "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Serve on 0.0.0.0 with Loopback set: %v", err)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true, "127.1.2.3:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "10.0.0.5:8080": false,
		"example.com:80": false, "127.0.0.1": false,
	} {
		if got := server.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %t, want %t", addr, got, want)
		}
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	o := server.Options{APIToken: testToken, HMACKey: []byte(testHMAC)}
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v %s", o, o, o, o),
		fmt.Sprintf("%v %+v %#v %s", f.srv, f.srv, f.srv, f.srv),
	} {
		if strings.Contains(s, testToken) || strings.Contains(s, testHMAC) {
			t.Errorf("a secret is printed: %s", s)
		}
	}
	// Nor in any answer.
	for _, path := range []string{"/metrics", "/healthz", "/v1/batches/nope"} {
		_, b := f.do(t, "GET", path, "", "", bearer...)
		if bytes.Contains(b, []byte(testToken)) || bytes.Contains(b, []byte(testHMAC)) {
			t.Errorf("GET %s shows a secret", path)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, b := f.do(t, "GET", p, "", ""); code != 200 {
			t.Errorf("GET %s without token = %d %s, want 200", p, code, b)
		}
	}
}

func TestReadyzFailsWithoutRedis(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer dead.Close()
	s, err := server.New(server.Options{Redis: dead, Enqueuer: f.enq, Checker: nopChecker{}, APIToken: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("readyz with Redis down = %d, want 503", rec.Code)
	}
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("healthz with Redis down = %d, want 200 (the process is alive)", rec.Code)
	}
}
