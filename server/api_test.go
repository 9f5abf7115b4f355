package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/server"
	"github.com/kontextq/kontextq/worker"
)

func basicAuth(user, pass string) []string {
	return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	same := strings.Repeat("x", len(testToken)) // right length, wrong token
	cases := []struct {
		name     string
		loopback bool
		method   string
		path     string
		hdr      []string
		want     int // 0: anything but 401
	}{
		{"API without token", true, "GET", "/v1/batches/b", nil, 401},
		{"API wrong token", true, "GET", "/v1/batches/b", []string{"Authorization", "Bearer nope"}, 401},
		{"API wrong token of the right length", true, "GET", "/v1/batches/b", []string{"Authorization", "Bearer " + same}, 401},
		{"API token as basic auth", true, "GET", "/v1/batches/b", basicAuth("u", testToken), 401},
		{"API right token", true, "GET", "/v1/batches/b", bearer, 0},
		{"API scheme in lower case", true, "GET", "/v1/batches/b", []string{"Authorization", "bearer " + testToken}, 0},
		{"API POST without token", true, "POST", "/v1/jobs", nil, 401},
		{"healthz open", false, "GET", "/healthz", nil, 200},
		{"readyz open", false, "GET", "/readyz", nil, 200},
		{"callback has its own check", false, "POST", "/kie/callback", nil, 400},
		{"metrics open on loopback", true, "GET", "/metrics", nil, 200},
		{"dashboard open on loopback", true, "GET", "/monitoring/", nil, 200},
		{"metrics closed when public", false, "GET", "/metrics", nil, 401},
		{"metrics with bearer when public", false, "GET", "/metrics", bearer, 200},
		{"dashboard closed when public", false, "GET", "/monitoring/queues", nil, 401},
		{"dashboard API closed when public", false, "GET", "/monitoring/api/queues", nil, 401},
		{"dashboard with basic auth when public", false, "GET", "/monitoring/queues", basicAuth("anyone", testToken), 200},
		{"dashboard with wrong basic auth", false, "GET", "/monitoring/queues", basicAuth("anyone", same), 401},
		{"dashboard with bearer when public", false, "GET", "/monitoring/queues", bearer, 200},
	}
	fixtures := map[bool]*fixture{
		true:  setup(t, fixtureOpts{}),
		false: setup(t, fixtureOpts{server: func(o *server.Options) { o.Loopback = false }}),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := fixtures[tc.loopback].do(t, tc.method, tc.path, "", "", tc.hdr...)
			switch {
			case tc.want == 0 && code == 401:
				t.Errorf("%s %s = 401, want access: %s", tc.method, tc.path, body)
			case tc.want != 0 && code != tc.want:
				t.Errorf("%s %s = %d, want %d: %.200s", tc.method, tc.path, code, tc.want, body)
			}
		})
	}
	// A browser is asked for the token as a password rather than shown an error.
	resp, err := http.Get(fixtures[false].url + "/monitoring/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("dashboard 401 WWW-Authenticate = %q, want a Basic challenge", got)
	}
}

func TestInsecureNoTokenOpensEverythingOnLoopback(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{server: func(o *server.Options) { o.APIToken = ""; o.InsecureNoToken = true }})
	code, body := f.do(t, "POST", "/v1/jobs?batch=open", "application/json", `{"prompt": "a red fox"}`)
	if code != 201 {
		t.Fatalf("POST without token on an insecure loopback server = %d %s, want 201", code, body)
	}
}

type jobAnswer struct {
	Batch string `json:"batch"`
	ID    string `json:"id"`
	Added bool   `json:"added"`
	State string `json:"state"`
	Line  int    `json:"line"`
}

func TestPostOneJobIsIdempotent(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	body := `{
  "batch": "cats",
  "prompt": "a cat reading a newspaper",
  "aspectRatio": "1:1",
  "model": "flux-kontext-max"
}`
	code, b := f.post(t, "/v1/jobs", "application/json", body)
	if code != 201 {
		t.Fatalf("first POST = %d %s, want 201", code, b)
	}
	first := decode[jobAnswer](t, b)
	if !first.Added || first.Batch != "cats" || first.ID == "" || first.State != "queued" {
		t.Fatalf("first POST answered %+v", first)
	}
	// The same job again, this time naming the batch in the query and with other whitespace.
	code, b = f.post(t, "/v1/jobs?batch=cats", "application/json; charset=utf-8",
		`{"prompt":"a cat reading a newspaper","aspectRatio":"1:1","model":"flux-kontext-max"}`)
	if code != 200 {
		t.Fatalf("second POST = %d %s, want 200", code, b)
	}
	second := decode[jobAnswer](t, b)
	if second.Added || second.ID != first.ID {
		t.Fatalf("second POST answered %+v, want the same id %s, not added", second, first.ID)
	}
	if n, tasks := f.queued(t, "cats"); n != 1 || tasks != 1 {
		t.Errorf("after two POSTs of one job: %d jobs, %d submit tasks; want 1 and 1", n, tasks)
	}

	// Both ways of reading it back agree.
	for _, path := range []string{"/v1/jobs/cats/" + first.ID, "/v1/jobs/" + first.ID + "?batch=cats"} {
		code, b = f.do(t, "GET", path, "", "", bearer...)
		if code != 200 {
			t.Fatalf("GET %s = %d %s", path, code, b)
		}
		j := decode[struct {
			ID      string `json:"id"`
			State   string `json:"state"`
			Request struct {
				Prompt string `json:"prompt"`
			} `json:"request"`
		}](t, b)
		if j.ID != first.ID || j.State != "queued" || j.Request.Prompt != "a cat reading a newspaper" {
			t.Errorf("GET %s = %s", path, b)
		}
	}
	code, b = f.do(t, "GET", "/v1/batches/cats", "", "", bearer...)
	if code != 200 || !strings.Contains(string(b), `"total":1`) || !strings.Contains(string(b), `"queued":1`) {
		t.Errorf("GET /v1/batches/cats = %d %s", code, b)
	}
	for _, path := range []string{"/v1/jobs/cats/nope", "/v1/batches/nope"} {
		if code, b := f.do(t, "GET", path, "", "", bearer...); code != 404 {
			t.Errorf("GET %s = %d %s, want 404", path, code, b)
		}
	}
	if code, b := f.do(t, "GET", "/v1/jobs/"+first.ID, "", "", bearer...); code != 400 {
		t.Errorf("GET /v1/jobs/{id} without batch = %d %s, want 400", code, b)
	}
}

func TestPostBadJob(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	cases := []struct {
		name, body string
		field      string // a problem must name it ("" for the body as a whole)
		msg        string // and say this
	}{
		{"truncated JSON", `{"batch": "b", "prompt": "a fox"`, "", "invalid JSON"},
		{"not JSON", `prompt=a fox`, "", "invalid JSON"},
		{"an array", `[{"batch": "b", "prompt": "a fox"}]`, "", "one JSON object"},
		{"two objects", `{"batch": "b", "prompt": "a"} {"prompt": "b"}`, "", "x-ndjson"},
		{"no prompt", `{"batch": "b"}`, "prompt", "required"},
		{"bad ratio", `{"batch": "b", "prompt": "a fox", "aspectRatio": "2:1"}`, "aspectRatio", ""},
		{"unknown field", `{"batch": "b", "prompt": "a fox", "colour": "red"}`, "colour", ""},
		{"wrong type", `{"batch": "b", "prompt": "a fox", "safetyTolerance": "2"}`, "safetyTolerance", ""},
		{"no batch", `{"prompt": "a fox"}`, "batch", "required"},
		{"bad batch", `{"batch": "../etc", "prompt": "a fox"}`, "batch", ""},
		{"batch not a string", `{"batch": 7, "prompt": "a fox"}`, "batch", "string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, b := f.post(t, "/v1/jobs", "application/json", tc.body)
			if code != 400 {
				t.Fatalf("POST %s = %d %s, want 400", tc.body, code, b)
			}
			e := decode[errorAnswer](t, b)
			found := false
			for _, p := range e.Problems {
				if p.Field == tc.field && strings.Contains(p.Message, tc.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("answer %s names no problem with field %q saying %q", b, tc.field, tc.msg)
			}
		})
	}
	if n, tasks := f.queued(t, "b"); n != 0 || tasks != 0 {
		t.Errorf("bad jobs enqueued: %d jobs, %d tasks", n, tasks)
	}
	if code, b := f.post(t, "/v1/jobs?batch=b", "text/plain", `{"prompt": "a fox"}`); code != 415 {
		t.Errorf("POST text/plain = %d %s, want 415", code, b)
	}
}

func TestOversizedBodies(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{server: func(o *server.Options) { o.MaxJobBytes = 1 << 10; o.MaxBatchBytes = 8 << 10 }})
	long := strings.Repeat("very ", 300) // 1,500 bytes: a valid prompt, an oversized body
	code, b := f.post(t, "/v1/jobs?batch=big", "application/json", fmt.Sprintf(`{"prompt": %q}`, long))
	if code != 413 {
		t.Errorf("POST of a 1.5 KiB job with a 1 KiB limit = %d %s, want 413", code, b)
	}
	var nd strings.Builder
	for i := range 200 { // ~10 KiB of valid lines
		fmt.Fprintf(&nd, "{\"prompt\": \"a lighthouse at dusk, study number %d\"}\n", i)
	}
	code, b = f.post(t, "/v1/jobs?batch=big", "application/x-ndjson", nd.String())
	if code != 413 {
		t.Errorf("POST of 10 KiB NDJSON with an 8 KiB limit = %d %s, want 413", code, b)
	}
	if n, tasks := f.queued(t, "big"); n != 0 || tasks != 0 {
		t.Errorf("oversized bodies enqueued %d jobs, %d tasks; want none", n, tasks)
	}
}

type bulkAnswer struct {
	Batch    string      `json:"batch"`
	Added    int         `json:"added"`
	Existing int         `json:"existing"`
	Jobs     []jobAnswer `json:"jobs"`
}

func TestPostNDJSON(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	bad := `{"prompt": "a fox in the snow"}
{"prompt": "a fox in the rain", "aspectRatio": "7:5"}

{"id": "owl", "prompt": "an owl", "model": "flux-kontext-ultra"}
{"prompt": "a fox in the sun"}
`
	code, b := f.post(t, "/v1/jobs?batch=foxes", "application/x-ndjson", bad)
	if code != 400 {
		t.Fatalf("NDJSON with bad lines = %d %s, want 400", code, b)
	}
	e := decode[errorAnswer](t, b)
	var lines []string
	for _, p := range e.Problems {
		lines = append(lines, fmt.Sprintf("%d:%s", p.Line, p.Field))
	}
	if got := strings.Join(lines, " "); got != "2:aspectRatio 4:model" {
		t.Errorf("problems at %q, want 2:aspectRatio 4:model (%s)", got, b)
	}
	if n, tasks := f.queued(t, "foxes"); n != 0 || tasks != 0 {
		t.Fatalf("a body with bad lines enqueued %d jobs, %d tasks; want none", n, tasks)
	}

	good := strings.NewReplacer(`, "aspectRatio": "7:5"`, "", "flux-kontext-ultra", "flux-kontext-pro").Replace(bad)
	code, b = f.post(t, "/v1/jobs?batch=foxes", "application/x-ndjson", good)
	if code != 200 {
		t.Fatalf("good NDJSON = %d %s", code, b)
	}
	first := decode[bulkAnswer](t, b)
	if first.Added != 4 || first.Existing != 0 || len(first.Jobs) != 4 || first.Jobs[2].ID != "owl" || first.Jobs[2].Line != 4 {
		t.Fatalf("good NDJSON answered %s", b)
	}
	code, b = f.post(t, "/v1/jobs?batch=foxes", "application/x-ndjson", good)
	if code != 200 {
		t.Fatalf("NDJSON again = %d %s", code, b)
	}
	again := decode[bulkAnswer](t, b)
	if again.Added != 0 || again.Existing != 4 {
		t.Errorf("posting the same NDJSON again: added %d, existing %d; want 0 and 4", again.Added, again.Existing)
	}
	for i := range again.Jobs {
		if again.Jobs[i].ID != first.Jobs[i].ID {
			t.Errorf("line %d got id %s the second time, %s the first", again.Jobs[i].Line, again.Jobs[i].ID, first.Jobs[i].ID)
		}
	}
	if n, tasks := f.queued(t, "foxes"); n != 4 || tasks != 4 {
		t.Errorf("after posting 4 jobs twice: %d jobs, %d submit tasks; want 4 and 4", n, tasks)
	}
	if code, b := f.post(t, "/v1/jobs", "application/x-ndjson", good); code != 400 || !strings.Contains(string(b), "batch") {
		t.Errorf("NDJSON without ?batch = %d %s, want 400 naming batch", code, b)
	}
}

func TestLocalInputImageRefused(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{})
	dir := t.TempDir()
	img := filepath.Join(dir, "real.png")
	fh, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(fh, image.NewRGBA(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	// A real image, a missing file, a relative path and a file URL must all get the same
	// answer: a caller must not even learn whether a path exists on the server.
	var answers []string
	for _, p := range []string{img, filepath.Join(dir, "missing.png"), "real.png", "file://" + img} {
		code, b := f.post(t, "/v1/jobs?batch=edits", "application/json", fmt.Sprintf(`{"prompt": "make it blue", "inputImage": %q}`, p))
		if code != 400 {
			t.Fatalf("inputImage %s = %d %s, want 400", p, code, b)
		}
		e := decode[errorAnswer](t, b)
		if len(e.Problems) != 1 || e.Problems[0].Field != "inputImage" || !strings.Contains(e.Problems[0].Message, "only http(s) URLs") {
			t.Errorf("inputImage %s: %s", p, b)
		}
		answers = append(answers, strings.ReplaceAll(e.Problems[0].Message, fmt.Sprintf("%q", p), "PATH"))
	}
	for _, a := range answers[1:] {
		if a != answers[0] {
			t.Errorf("answers differ by path:\n%s\n%s", answers[0], a)
		}
	}
	// The byte order mark and CRLF endings the reader accepts do not hide a path from the check.
	nd := fmt.Sprintf("\ufeff{\"prompt\": \"make it red\", \"inputImage\": %q}\r\n", img) +
		"{\"prompt\": \"make it blue\", \"inputImage\": \"https://example.com/a.png\"}\r\n"
	code, b := f.post(t, "/v1/jobs?batch=edits", "application/x-ndjson", nd)
	e := decode[errorAnswer](t, b)
	if code != 400 || len(e.Problems) != 1 || e.Problems[0].Line != 1 || e.Problems[0].Field != "inputImage" {
		t.Errorf("NDJSON with a local path on line 1 = %d %s", code, b)
	}
	if n, _ := f.queued(t, "edits"); n != 0 {
		t.Errorf("%d jobs with local paths enqueued", n)
	}
	code, b = f.post(t, "/v1/jobs?batch=edits", "application/json", `{"prompt": "make it blue", "inputImage": "https://example.com/a.png"}`)
	if code != 201 {
		t.Errorf("an edit of an https image = %d %s, want 201", code, b)
	}
}

// A batch posted with ?maxCredits= is capped for every worker: the jobs beyond the cap stay
// queued, and GET shows the spend, the cap and why the rest are held.
func TestPostJobsWithACreditCap(t *testing.T) {
	t.Parallel()
	f := setup(t, fixtureOpts{
		sim:    kiesim.Options{Prices: map[string]float64{"flux-kontext-pro": 5}, GenTimeMedian: 200 * time.Millisecond, GenTimeSigma: -1},
		worker: func(o *worker.Options) { o.Prices = map[string]float64{"flux-kontext-pro": 5} },
	})
	body := "{\"prompt\": \"a heron, 1\"}\n{\"prompt\": \"a heron, 2\"}\n{\"prompt\": \"a heron, 3\"}\n"
	code, b := f.post(t, "/v1/jobs?batch=herons&maxCredits=ten", "application/x-ndjson", body)
	if code != 400 || !strings.Contains(string(b), "maxCredits") {
		t.Fatalf("maxCredits=ten = %d %s, want 400 naming maxCredits", code, b)
	}
	if n, _ := f.queued(t, "herons"); n != 0 {
		t.Fatalf("a refused maxCredits enqueued %d jobs", n)
	}
	if code, b := f.post(t, "/v1/jobs?batch=herons&maxCredits=10", "application/x-ndjson", body); code != 200 {
		t.Fatalf("capped NDJSON = %d %s", code, b)
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
	var v struct {
		Archived   int64    `json:"archived"`
		Queued     int64    `json:"queued"`
		Spent      float64  `json:"spent"`
		MaxCredits *float64 `json:"maxCredits"`
		Held       int64    `json:"held"`
		HeldReason string   `json:"heldReason"`
	}
	eventually.Nil(t, 20*time.Second, "the batch to stop at its cap", func() error {
		code, b := f.do(t, "GET", "/v1/batches/herons", "", "", bearer...)
		if code != 200 {
			return fmt.Errorf("GET = %d %s", code, b)
		}
		v.MaxCredits = nil
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		if v.Archived != 2 || v.Held != 1 {
			return fmt.Errorf("batch %s", b)
		}
		return nil
	})
	if v.Spent != 10 || v.MaxCredits == nil || *v.MaxCredits != 10 || v.Queued != 1 || v.HeldReason != "budget: batch cap 10 credits reached" {
		t.Errorf("batch answer %+v, want 10 of 10 credits spent and one job held by the cap", v)
	}
	if st := f.sim.Stats(); st.Accepted != 2 {
		t.Errorf("Kie accepted %d calls, want 2", st.Accepted)
	}
}
