package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/worker"
)

// faultHook makes a real Redis client fail the commands match selects, as a dropped connection
// would: the command never reaches the server. It fails every match from the first one until
// window has passed, and at most limit of them (0: no limit).
type faultHook struct {
	match  func(args []any) bool
	window time.Duration
	limit  int

	mu     sync.Mutex
	first  time.Time
	failed int
}

var errInjected = errors.New("injected fault: connection reset by peer")

func (h *faultHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *faultHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fail(cmd.Args()) {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (h *faultHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *faultHook) fail(args []any) bool {
	if !h.match(args) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.first.IsZero() {
		h.first = now
	}
	if now.Sub(h.first) > h.window || (h.limit > 0 && h.failed >= h.limit) {
		return false
	}
	h.failed++
	return true
}

func (h *faultHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// faultyClient is a second client on the test's Redis whose commands pass through h.
func faultyClient(t *testing.T, b *bundle, h *faultHook) *redis.Client {
	t.Helper()
	c := redis.NewClient(b.env.Client.Options())
	c.AddHook(h)
	t.Cleanup(func() { c.Close() })
	return c
}

// transition matches the ledger's transition script run for a change from one state to another
// (EVALSHA or EVAL, the script's keys, then from and to).
func transition(from, to jobs.State) func(args []any) bool {
	// The script is the one with nine keys; its first arguments are from and to.
	const keys = 9
	return func(args []any) bool {
		if len(args) < 5+keys {
			return false
		}
		name := strings.ToLower(fmt.Sprint(args[0]))
		return (name == "evalsha" || name == "eval") && fmt.Sprint(args[2]) == strconv.Itoa(keys) &&
			fmt.Sprint(args[3+keys]) == string(from) && fmt.Sprint(args[4+keys]) == string(to)
	}
}

// mentions matches any command with an argument containing s (a key, a task id).
func mentions(s string) func(args []any) bool {
	return func(args []any) bool {
		for _, a := range args {
			if v, ok := a.(string); ok && strings.Contains(v, s) {
				return true
			}
		}
		return false
	}
}

// asynq archives a task after its last attempt whatever the error, even one that IsFailure calls
// harmless. A submit task on its last attempt that meets a 429 must not leave its job queued
// with no task to submit it: the batch would never finish.
func TestSubmitRateLimitedOnLastAttemptStillSubmits(t *testing.T) {
	b := setup(t, setupOpts{
		sim: kiesim.Options{
			GenerateLimit: 1, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
			GenTimeMedian: 200 * time.Millisecond, GenTimeSigma: -1, ErrorSignal: kiesim.SignalHTTP,
		},
		// Told far more than Kie allows, so that one of the two submits meets Kie's 429.
		told: ratelimit.Rate{Events: 20, Per: time.Second},
	})
	ctx := context.Background()
	specs := []jobs.Spec{
		{Batch: "last", ID: "a", Prompt: "a lantern in fog"},
		{Batch: "last", ID: "b", Prompt: "a lantern in rain"},
	}
	b.enqueue(t, specs...)
	// They are dispatched, and their submit tasks are on their last attempt (as after 50 counted
	// failures).
	if ds, err := b.ledger.Dispatch(ctx, 2); err != nil || len(ds) != 2 {
		t.Fatalf("dispatch: %v %v", ds, err)
	}
	client := asynq.NewClientFromRedisClient(b.env.Client)
	defer client.Close()
	for _, s := range specs {
		task, opts := jobs.SubmitTask(b.w.Queues(), jobs.Ref{Batch: s.Batch, ID: s.ID}, 0)
		if _, err := client.EnqueueContext(ctx, task, append(opts, asynq.MaxRetry(0))...); err != nil {
			t.Fatal(err)
		}
	}

	c := b.run(t, "last", 30*time.Second)
	if c.Archived != 2 {
		t.Errorf("counts %+v, want both archived", c)
	}
	st := b.sim.Stats()
	if st.RateLimited == 0 {
		t.Errorf("Kie sent no 429: the test did not exercise a rate-limited last attempt")
	}
	if st.Accepted != 2 {
		t.Errorf("%d paid submissions for 2 jobs", st.Accepted)
	}
}

// A poll that finds a task's generation failed sends the job back to queued and queues its
// resubmission. When Redis fails between the two, the poll is retried: the retry must queue
// the resubmission rather than find the job queued and leave it there forever.
func TestRequeueSurvivesRedisErrorBeforeResubmission(t *testing.T) {
	b := setup(t, setupOpts{sim: kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 200 * time.Millisecond, GenTimeSigma: -1, GenerationFailureRate: 1,
	}})
	spec := jobs.Spec{Batch: "requeue", ID: "one", Prompt: "a bell tower at noon"}
	// The enqueue of the resubmission (the job's second submit task) fails once.
	h := &faultHook{match: mentions(":t:submit:requeue/one:1"), window: time.Minute, limit: 1}
	w := b.another(t, worker.Options{Redis: faultyClient(t, b, h), GenerationRetries: 1,
		FirstPoll: 300 * time.Millisecond, PollInterval: 300 * time.Millisecond})
	b.w = w
	b.ledger = w.Ledger()
	b.enqueue(t, spec)

	c := b.run(t, "requeue", 30*time.Second)
	if h.count() != 1 {
		t.Fatalf("the fault was injected %d times, want 1", h.count())
	}
	j, err := b.ledger.Get(context.Background(), jobs.Ref{Batch: "requeue", ID: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Failed != 1 || j.Reason != jobs.GenerationFailed || j.Submissions != 2 {
		t.Errorf("counts %+v, job %s/%s after %d submissions; want failed generation_failed after 2", c, j.State, j.Reason, j.Submissions)
	}
	if st := b.sim.Stats(); st.Accepted != 2 {
		t.Errorf("%d paid submissions, want 2", st.Accepted)
	}
}

// Kie answered a generate call with a task id, and Redis then fails for a few seconds. The task
// is paid for: its id must still reach the ledger, and the job be archived, not failed as
// interrupted once Redis is back.
func TestTaskIDRecordedThroughRedisOutage(t *testing.T) {
	b := setup(t, setupOpts{sim: calmSim()})
	h := &faultHook{match: transition(jobs.Queued, jobs.Submitted), window: 3500 * time.Millisecond}
	w := b.another(t, worker.Options{Redis: faultyClient(t, b, h), FirstPoll: 300 * time.Millisecond, PollInterval: 300 * time.Millisecond})
	b.w = w
	b.ledger = w.Ledger()
	ctx := context.Background()
	ref := jobs.Ref{Batch: "outage", ID: "one"}
	b.enqueue(t, jobs.Spec{Batch: ref.Batch, ID: ref.ID, Prompt: "a kite in a gale"})

	err := w.Handler().ProcessTask(ctx, asynq.NewTask(jobs.TypeSubmit, jobs.EncodePayload(jobs.Payload{Ref: ref})))
	if err != nil {
		t.Errorf("submit: %v", err)
	}
	if h.count() < 2 {
		t.Fatalf("the fault was injected %d times: the test did not exercise an outage", h.count())
	}
	j, err := b.ledger.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	tasks := b.sim.Tasks()
	if len(tasks) != 1 || j.State != jobs.Submitted || j.TaskID != tasks[0].TaskID || !j.Submitting.IsZero() {
		t.Fatalf("after the outage: job %s with task %q (marker %v); Kie holds %d tasks", j.State, j.TaskID, !j.Submitting.IsZero(), len(tasks))
	}
	if c := b.run(t, "outage", 30*time.Second); c.Archived != 1 {
		t.Errorf("counts %+v, want archived", c)
	}
	if st := b.sim.Stats(); st.Accepted != 1 {
		t.Errorf("%d paid submissions, want 1", st.Accepted)
	}
}

// Kie accepted a generate call (and billed a task), but what came back was not Kie's answer: a
// gateway between the worker and Kie timed out, or the body was garbled. Nothing says no task
// was created, so the job must not be submitted again: it ends failed as interrupted, for the
// user to retry knowingly.
func TestAmbiguousGenerateAnswerIsNotPaidTwice(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		body   string
	}{
		{"gateway timeout", http.StatusGatewayTimeout, "<html><body>504 Gateway Time-out</body></html>"},
		{"cloudflare origin timeout", 524, "error code: 524"},
		{"garbled 200", http.StatusOK, `{"code":200,"msg":"success","data":{"taskId":`},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := setup(t, setupOpts{sim: calmSim()})
			api, err := url.Parse(b.sim.APIURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: api.Scheme, Host: api.Host})
			proxy.ModifyResponse = func(resp *http.Response) error {
				if strings.HasSuffix(resp.Request.URL.Path, "/generate") {
					resp.Body.Close()
					resp.StatusCode = c.status
					resp.Body = io.NopCloser(strings.NewReader(c.body))
					resp.ContentLength = int64(len(c.body))
					resp.Header = http.Header{"Content-Type": {"text/html"}}
				}
				return nil
			}
			gw := httptest.NewServer(proxy)
			defer gw.Close()
			kc, err := kie.New(kie.Options{APIKey: b.sim.Key, BaseURL: gw.URL + api.Path, UploadURL: b.sim.UploadURL})
			if err != nil {
				t.Fatal(err)
			}
			w := b.another(t, worker.Options{Kie: kc})
			ctx := context.Background()
			ref := jobs.Ref{Batch: "gw", ID: "one"}
			b.enqueue(t, jobs.Spec{Batch: ref.Batch, ID: ref.ID, Prompt: "a ferry in fog"})
			submit := asynq.NewTask(jobs.TypeSubmit, jobs.EncodePayload(jobs.Payload{Ref: ref}))
			for range 2 { // the first attempt and asynq's retry of it
				_ = w.Handler().ProcessTask(ctx, submit)
			}
			if n := b.sim.Stats().Accepted; n != 1 {
				t.Errorf("Kie billed %d tasks for one job", n)
			}
			j, err := b.ledger.Get(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != jobs.Failed || j.Reason != jobs.Interrupted {
				t.Errorf("job %s (%s: %s), want failed as interrupted", j.State, j.Reason, j.Error)
			}
		})
	}
}
