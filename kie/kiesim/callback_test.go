package kiesim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
)

// receiver is a callback endpoint whose answers the test scripts.
type receiver struct {
	mu       sync.Mutex
	statuses []int // answered in order; 200 once exhausted
	got      []received
	arrived  chan struct{}
	srv      *httptest.Server
}

type received struct {
	header http.Header
	body   kie.Callback
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	rc := &receiver{statuses: statuses, arrived: make(chan struct{}, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var cb kie.Callback
		if err := json.Unmarshal(raw, &cb); err != nil {
			t.Errorf("callback body is not JSON: %s", raw)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, received{r.Header.Clone(), cb})
		status := 200
		if len(rc.statuses) > 0 {
			status, rc.statuses = rc.statuses[0], rc.statuses[1:]
		}
		rc.mu.Unlock()
		rc.arrived <- struct{}{}
		if status == 0 { // 0: never answer in time
			<-r.Context().Done()
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) calls() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// verify is an independent check of Kie's signing scheme.
func verify(key []byte, h http.Header, taskID string, now time.Time) bool {
	ts := h.Get("X-Webhook-Timestamp")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(taskID + "." + ts))
	sig, err := base64.StdEncoding.DecodeString(h.Get("X-Webhook-Signature"))
	return err == nil && hmac.Equal(sig, mac.Sum(nil))
}

func TestCallbacksSignedAndVerifiable(t *testing.T) {
	key := []byte("webhook-key")
	rc := newReceiver(t)
	f := setup(t, Options{CallbackHMACKey: key, GenerateLimit: -1})
	id := f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL + "/cb"})
	if n := f.srv.DeliverDueCallbacks(); n != 0 {
		t.Fatalf("%d callbacks sent before the task finished", n)
	}
	ti := f.finish(id)
	if n := f.srv.DeliverDueCallbacks(); n != 1 {
		t.Fatalf("DeliverDueCallbacks = %d, want 1", n)
	}
	got := rc.calls()
	if len(got) != 1 {
		t.Fatalf("%d callbacks received", len(got))
	}
	cb := got[0].body
	if cb.Code != 200 || cb.Data.TaskID != id || cb.Data.Info.ResultImageURL != ti.ResultURL || cb.Data.Info.OriginImageURL != ti.OriginURL {
		t.Fatalf("callback %+v, task %+v", cb, ti)
	}
	if !verify(key, got[0].header, id, f.clock.Now()) {
		t.Fatalf("signature does not verify: %v", got[0].header)
	}
	if verify([]byte("other-key"), got[0].header, id, f.clock.Now()) || verify(key, got[0].header, "other-task", f.clock.Now()) {
		t.Fatal("signature verifies with the wrong key or task")
	}
	if got[0].header.Get("X-Webhook-Signature") != Sign(key, id, got[0].header.Get("X-Webhook-Timestamp")) {
		t.Fatal("Sign disagrees with the signature sent")
	}

	// A failed task calls back with its code and no URLs.
	f.srv.Update(func(o *Options) { o.GenerationFailureRate = 1 })
	failed := f.submit(map[string]any{"prompt": "b", "callBackUrl": rc.srv.URL + "/cb"})
	f.finish(failed)
	f.srv.DeliverDueCallbacks()
	cb = rc.calls()[1].body
	if cb.Code != 501 || cb.Data.TaskID != failed || cb.Data.Info.ResultImageURL != "" || cb.Data.Info.OriginImageURL != "" {
		t.Fatalf("failure callback %+v", cb)
	}

	unsigned := newReceiver(t)
	g := setup(t, Options{})
	g.finish(g.submit(map[string]any{"prompt": "a", "callBackUrl": unsigned.srv.URL}))
	g.srv.DeliverDueCallbacks()
	if h := unsigned.calls()[0].header; h.Get("X-Webhook-Signature") != "" || h.Get("X-Webhook-Timestamp") != "" {
		t.Fatal("callback signed without a key")
	}
}

func TestCallbackRetries(t *testing.T) {
	t.Run("until 200", func(t *testing.T) {
		rc := newReceiver(t, 500, 404)
		f := setup(t, Options{})
		id := f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL})
		f.finish(id)
		steps := []struct {
			advance time.Duration
			sent    int
		}{
			{0, 1},                           // first delivery fails (500)
			{time.Minute - time.Second, 0},   // retry not due yet
			{time.Second, 1},                 // 1m later: fails again (404)
			{5*time.Minute - time.Second, 0}, // second retry not due yet
			{time.Second, 1},                 // 5m later: 200
			{time.Hour, 0},                   // nothing more
		}
		for i, s := range steps {
			f.clock.Advance(s.advance)
			if n := f.srv.DeliverDueCallbacks(); n != s.sent {
				t.Fatalf("step %d: %d deliveries, want %d", i, n, s.sent)
			}
		}
		ti, _ := f.srv.Task(id)
		if ti.CallbacksSent != 3 || ti.CallbacksDelivered != 1 || f.srv.PendingCallbacks() != 0 {
			t.Fatalf("sent %d delivered %d pending %d", ti.CallbacksSent, ti.CallbacksDelivered, f.srv.PendingCallbacks())
		}
	})
	t.Run("gives up after three retries", func(t *testing.T) {
		rc := newReceiver(t, 500, 500, 500, 500, 500)
		f := setup(t, Options{})
		f.finish(f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL}))
		total := 0
		for range 10 {
			total += f.srv.DeliverDueCallbacks()
			f.clock.Advance(15 * time.Minute)
		}
		if total != 4 || len(rc.calls()) != 4 {
			t.Fatalf("%d deliveries, want 1 + 3 retries", total)
		}
		if st := f.srv.Stats(); st.CallbacksSent != 4 || st.CallbacksDelivered != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("slow answer is a failure", func(t *testing.T) {
		rc := newReceiver(t, 0)
		f := setup(t, Options{CallbackTimeout: 100 * time.Millisecond})
		f.finish(f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL}))
		f.srv.DeliverDueCallbacks()
		if f.srv.PendingCallbacks() != 1 {
			t.Fatal("a callback that timed out was not scheduled for a retry")
		}
		f.clock.Advance(time.Minute)
		if f.srv.DeliverDueCallbacks() != 1 || f.srv.Stats().CallbacksDelivered != 1 {
			t.Fatal("the retry was not delivered")
		}
	})
}

func TestCallbackDropAndDuplicate(t *testing.T) {
	rc := newReceiver(t)
	f := setup(t, Options{CallbackDropRate: 1})
	id := f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL})
	f.finish(id)
	if n := f.srv.DeliverDueCallbacks(); n != 0 || len(rc.calls()) != 0 {
		t.Fatalf("dropped callback sent %d times", n)
	}
	if ti, _ := f.srv.Task(id); !ti.CallbackDropped {
		t.Fatal("TaskInfo does not say the callback was dropped")
	}

	dup := newReceiver(t)
	g := setup(t, Options{CallbackDuplicateRate: 1})
	id = g.submit(map[string]any{"prompt": "a", "callBackUrl": dup.srv.URL})
	g.finish(id)
	g.srv.DeliverDueCallbacks()
	got := dup.calls()
	if len(got) != 2 || got[0].body.Data.TaskID != id || got[1].body.Data.TaskID != id {
		t.Fatalf("%d callbacks, want the same one twice", len(got))
	}
}

func TestCallbackTimerWithRealClock(t *testing.T) {
	rc := newReceiver(t)
	srv := newServer(t, Options{GenTimeMedian: 30 * time.Millisecond, GenTimeSigma: -1})
	f := &fixture{t: t, srv: srv, hc: http.DefaultClient}
	f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL})
	select {
	case <-rc.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no callback from the timer")
	}
}

func TestCloseStopsCallbacks(t *testing.T) {
	rc := newReceiver(t)
	f := setup(t, Options{})
	f.submit(map[string]any{"prompt": "a", "callBackUrl": rc.srv.URL})
	if f.srv.PendingCallbacks() != 1 {
		t.Fatal("no callback pending")
	}
	f.srv.Close()
	f.clock.Advance(time.Hour)
	if f.srv.PendingCallbacks() != 0 || f.srv.DeliverDueCallbacks() != 0 || len(rc.calls()) != 0 {
		t.Fatal("callbacks continue after Close")
	}
}
