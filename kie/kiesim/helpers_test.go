package kiesim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a test clock: time moves only when the test says so.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// envelope is Kie's answer shape, decoded loosely so tests see what was actually sent.
type envelope struct {
	Code    int             `json:"code"`
	Msg     string          `json:"msg"`
	Data    json.RawMessage `json:"data"`
	Success *bool           `json:"success"`
}

type reply struct {
	status int
	env    envelope
	raw    []byte
}

// fixture is a simulator on a test server with a fake clock and a well-behaved client.
type fixture struct {
	t     *testing.T
	srv   *Server
	clock *clock
	hc    *http.Client
}

func setup(t *testing.T, o Options) *fixture {
	t.Helper()
	c := newClock()
	if o.Now == nil {
		o.Now = c.Now
	}
	if o.ErrorSignal == SignalEither {
		o.ErrorSignal = SignalBody
	}
	return &fixture{t: t, srv: newServer(t, o), clock: c, hc: &http.Client{Timeout: 10 * time.Second}}
}

func (f *fixture) request(method, url string, body []byte, contentType string, edit func(*http.Request)) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		f.t.Fatalf("building %s %s: %v", method, url, err)
	}
	req.Header.Set("Authorization", "Bearer "+f.srv.Key)
	req.Header.Set("User-Agent", "kontextq-test/1")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("reading %s %s: %v", method, url, err)
	}
	rp := reply{status: resp.StatusCode, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &rp.env); err != nil {
			f.t.Fatalf("%s %s: answer is not an envelope: %v: %s", method, url, err, raw)
		}
	}
	return rp
}

func (f *fixture) postJSON(url string, v any) reply {
	f.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			f.t.Fatal(err)
		}
	}
	return f.request(http.MethodPost, url, b, "application/json", nil)
}

func (f *fixture) generate(body any) reply {
	f.t.Helper()
	return f.postJSON(f.srv.APIURL+pathGenerate, body)
}

// submit generates and fails the test unless a task was created.
func (f *fixture) submit(body any) string {
	f.t.Helper()
	rp := f.generate(body)
	if rp.env.Code != 200 {
		f.t.Fatalf("generate: want code 200, got HTTP %d %s", rp.status, rp.raw)
	}
	var d struct {
		TaskID string `json:"taskId"`
	}
	if err := json.Unmarshal(rp.env.Data, &d); err != nil || d.TaskID == "" {
		f.t.Fatalf("generate: no taskId in %s", rp.raw)
	}
	return d.TaskID
}

func (f *fixture) record(taskID string) reply {
	f.t.Helper()
	return f.request(http.MethodGet, f.srv.APIURL+pathRecordInfo+"?taskId="+taskID, nil, "", nil)
}

// recordData polls and decodes data, failing unless the answer is code 200.
func (f *fixture) recordData(taskID string) map[string]any {
	f.t.Helper()
	rp := f.record(taskID)
	if rp.env.Code != 200 {
		f.t.Fatalf("record-info %s: %s", taskID, rp.raw)
	}
	var d map[string]any
	if err := json.Unmarshal(rp.env.Data, &d); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// finish moves the clock past the task's completion.
func (f *fixture) finish(taskID string) TaskInfo {
	f.t.Helper()
	ti, ok := f.srv.Task(taskID)
	if !ok {
		f.t.Fatalf("task %s unknown to the simulator", taskID)
	}
	if d := ti.CompleteTime.Sub(f.clock.Now()); d >= 0 {
		f.clock.Advance(d + time.Millisecond)
	}
	ti, _ = f.srv.Task(taskID)
	return ti
}

func (f *fixture) get(url string) reply {
	f.t.Helper()
	return f.request(http.MethodGet, url, nil, "", nil)
}

func prompt(p string) map[string]any { return map[string]any{"prompt": p} }

// newServer starts a simulator for one test.
func newServer(tb testing.TB, o Options) *Server {
	tb.Helper()
	s, err := Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}
