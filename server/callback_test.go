package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/server"
	"github.com/kontextq/kontextq/worker"
)

// callbackBody is what Kie posts, with whatever URLs the sender chooses.
func callbackBody(taskID, resultURL string) string {
	var cb kie.Callback
	cb.Code, cb.Msg = 200, "success"
	cb.Data.TaskID = taskID
	cb.Data.Info.ResultImageURL = resultURL
	b, _ := json.Marshal(cb)
	return string(b)
}

func signed(key, taskID string, at time.Time) []string {
	ts, sig := kie.SignCallback([]byte(key), taskID, at)
	return []string{kie.HeaderWebhookTimestamp, ts, kie.HeaderWebhookSignature, sig}
}

func TestCallbacks(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name          string
		allowUnsigned bool
		task          string // "" for the fixture's submitted task
		hdr           func(task string) []string
		want          int
		checks        int
	}{
		{"valid", false, "", func(task string) []string { return signed(testHMAC, task, now) }, 200, 1},
		{"forged signature", false, "", func(task string) []string { return signed("guessed-key", task, now) }, 401, 0},
		{"signature of another task", false, "", func(string) []string { return signed(testHMAC, "other-task", now) }, 401, 0},
		{"stale", false, "", func(task string) []string { return signed(testHMAC, task, now.Add(-6*time.Minute)) }, 401, 0},
		{"from the future", false, "", func(task string) []string { return signed(testHMAC, task, now.Add(6*time.Minute)) }, 401, 0},
		{"garbled signature", false, "", func(task string) []string {
			return []string{kie.HeaderWebhookTimestamp, "123", kie.HeaderWebhookSignature, "%%%"}
		}, 401, 0},
		{"unsigned, not allowed", false, "", func(string) []string { return nil }, 401, 0},
		{"unsigned, allowed", true, "", func(string) []string { return nil }, 200, 1},
		{"forged while unsigned allowed", true, "", func(task string) []string { return signed("guessed-key", task, now) }, 401, 0},
		{"unknown task", false, "not-ours", func(task string) []string { return signed(testHMAC, task, now) }, 200, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, fixtureOpts{server: func(o *server.Options) { o.AllowUnsigned = tc.allowUnsigned }})
			f.submitted(t, "cb", "a heron", "task-1")
			task := tc.task
			if task == "" {
				task = "task-1"
			}
			start := time.Now()
			code, b := f.do(t, "POST", "/kie/callback", "application/json", callbackBody(task, "https://evil.example/x.png"), tc.hdr(task)...)
			if code != tc.want {
				t.Errorf("callback = %d %s, want %d", code, b, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("callback answered in %s; Kie gives up after 15 s and the answer should take milliseconds", d)
			}
			if got := len(f.checks(t)); got != tc.checks {
				t.Errorf("%d check tasks queued, want %d", got, tc.checks)
			}
		})
	}
}

// A refused unsigned callback says what is missing: with a key configured, the signature headers
// (not the key, which is set); without one, the key or --allow-unsigned-callbacks.
func TestUnsignedCallbackRefusalSaysWhatIsMissing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		key       []byte
		want, not string
	}{
		{"key configured", []byte(testHMAC), kie.HeaderWebhookSignature, "set KIE_WEBHOOK_HMAC_KEY"},
		{"no key", nil, "--allow-unsigned-callbacks", kie.HeaderWebhookSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, fixtureOpts{server: func(o *server.Options) { o.HMACKey = tc.key }})
			f.submitted(t, "cb", "a heron", "task-1")
			code, b := f.do(t, "POST", "/kie/callback", "application/json", callbackBody("task-1", ""))
			if code != 401 || !strings.Contains(string(b), tc.want) || strings.Contains(string(b), tc.not) {
				t.Errorf("unsigned callback = %d %s, want 401 naming %q and not %q", code, b, tc.want, tc.not)
			}
		})
	}
}

func TestDuplicateCallbackQueuesOneCheck(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	f.submitted(t, "cb", "a heron", "task-1")
	hdr := signed(testHMAC, "task-1", time.Now())
	body := callbackBody("task-1", "")
	for i := range 3 {
		if code, b := f.do(t, "POST", "/kie/callback", "application/json", body, hdr...); code != 200 {
			t.Fatalf("delivery %d = %d %s", i+1, code, b)
		}
	}
	ids := f.checks(t)
	if len(ids) != 1 {
		t.Fatalf("three deliveries queued %d checks, want 1", len(ids))
	}
	// Once that check has run (its task is gone), a replay of the same delivery still
	// queues nothing: each replay would otherwise spend a status call.
	if err := f.insp.DeleteTask(f.queues.Poll, ids[0]); err != nil {
		t.Fatal(err)
	}
	if code, b := f.do(t, "POST", "/kie/callback", "application/json", body, hdr...); code != 200 {
		t.Fatalf("replay = %d %s", code, b)
	}
	if got := len(f.checks(t)); got != 0 {
		t.Errorf("a replayed delivery queued %d checks, want 0", got)
	}
	// A new delivery (Kie's retry, signed anew) is acted on.
	if code, b := f.do(t, "POST", "/kie/callback", "application/json", body, signed(testHMAC, "task-1", time.Now().Add(2*time.Second))...); code != 200 {
		t.Fatalf("retry = %d %s", code, b)
	}
	if got := len(f.checks(t)); got != 1 {
		t.Errorf("a fresh delivery queued %d checks, want 1", got)
	}
}

// TestForgedCallbacksNeverChangeTheArchive runs the whole pipeline against the simulator with
// polls far off, so that only callbacks can get the job archived quickly. Callbacks carrying an
// attacker's image URL — one with a bad signature, one with a genuine signature and a rewritten
// body (the body is not signed) — must not make anything download that URL; the genuine callback
// from the simulator gets the job archived with exactly the simulator's image.
func TestForgedCallbacksNeverChangeTheArchive(t *testing.T) {
	t.Parallel()
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Add(1)
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write([]byte("\x89PNG\r\n\x1a\nnot the image Kie made"))
	}))
	defer evil.Close()
	evilURL := evil.URL + "/result.png"

	f := setup(t, fixtureOpts{
		sim: kiesim.Options{CallbackHMACKey: []byte(testHMAC), GenTimeMedian: 1500 * time.Millisecond, GenTimeSigma: -1},
		worker: func(o *worker.Options) {
			o.FirstPoll = 2 * time.Minute // polling would archive it only after the test's deadline
			o.PollInterval = 2 * time.Minute
		},
		server: func(o *server.Options) { o.AllowUnsigned = true },
	})
	out, err := f.enq.Enqueue(context.Background(), jobs.Spec{Batch: "herons", Prompt: "a heron at dawn", OutputFormat: "png"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	var j *jobs.Job
	eventually.True(t, 20*time.Second, "the job to be submitted", func() bool {
		j, err = f.ledger.Get(context.Background(), out.Ref)
		return err == nil && j.TaskID != ""
	})
	if code, b := f.do(t, "POST", "/kie/callback", "application/json", callbackBody(j.TaskID, evilURL), signed("guessed-key", j.TaskID, time.Now())...); code != 401 {
		t.Errorf("forged callback = %d %s, want 401", code, b)
	}
	// A genuine signature proves the task id and time only; the body here is the attacker's.
	if code, b := f.do(t, "POST", "/kie/callback", "application/json", callbackBody(j.TaskID, evilURL), signed(testHMAC, j.TaskID, time.Now())...); code != 200 {
		t.Errorf("signed callback with a rewritten body = %d %s, want 200 (it may trigger a poll)", code, b)
	}
	if code, b := f.do(t, "POST", "/kie/callback", "application/json", callbackBody(j.TaskID, evilURL)); code != 200 {
		t.Errorf("unsigned callback while allowed = %d %s, want 200 (it may trigger a poll)", code, b)
	}

	eventually.True(t, 30*time.Second, "the job to be archived after the simulator's callback", func() bool {
		j, err = f.ledger.Get(context.Background(), out.Ref)
		return err == nil && j.State.Terminal()
	})
	if j.State != jobs.Archived {
		t.Fatalf("job ended %s: %s", j.State, j.Error)
	}
	ti, ok := f.sim.Task(j.TaskID)
	if !ok {
		t.Fatalf("simulator has no task %s", j.TaskID)
	}
	data, err := os.ReadFile(j.Location)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != ti.ImageSHA256 {
		t.Errorf("archived sha256 %s, the simulator served %s", got, ti.ImageSHA256)
	}
	if n := evilHits.Load(); n != 0 {
		t.Errorf("the attacker's URL was fetched %d times", n)
	}
	if strings.Contains(j.ResultURL, evil.URL) {
		t.Errorf("the ledger took the attacker's URL: %s", j.ResultURL)
	}
	if st := f.sim.Stats(); st.CallbacksDelivered == 0 {
		t.Errorf("the simulator's callback was never accepted (sent %d)", st.CallbacksSent)
	}
}
