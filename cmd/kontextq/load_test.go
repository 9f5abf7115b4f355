package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// cliEnv is the environment of a kontextq process working in the test's namespace.
func cliEnv(env *redistest.Env, extra ...string) []string {
	return append([]string{"REDIS_URL=" + env.URL, "KONTEXTQ_NAMESPACE=" + env.Prefix + "ns", "KONTEXTQ_LOG_LEVEL=warn"}, extra...)
}

// kq runs kontextq to its end and returns its exit code and output (stdout and stderr).
func kq(t *testing.T, dir string, envv []string, args ...string) (int, string) {
	t.Helper()
	p := start(t, dir, envv, args...)
	code := p.wait(t, 2*time.Minute)
	return code, p.out.String()
}

func writeFile(t *testing.T, path string, content []byte) string {
	t.Helper()
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// submitQueue reports the submit tasks of the test's namespace per state.
// inLine counts the jobs of a batch waiting in line for dispatch.
func inLine(t *testing.T, env *redistest.Env, batch string) int64 {
	t.Helper()
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	waiting, err := l.Waiting(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for _, w := range waiting {
		if w.Batch == batch {
			n += w.Jobs
		}
	}
	return n
}

func submitQueue(t *testing.T, env *redistest.Env) *asynq.QueueInfo {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(env.Client)
	defer insp.Close()
	qi, err := insp.GetQueueInfo(jobs.QueuesFor(env.Prefix + "ns").Submit)
	if err != nil {
		return &asynq.QueueInfo{}
	}
	return qi
}

// Every kind of bad input is refused with exit 2 and a message naming the line and the field,
// and leaves Redis without a trace of the batch, even when good lines come first.
func TestLoadRefusesBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "photo.png"), pngBytes(t, 8, 8))
	writeFile(t, filepath.Join(dir, "notes.png"), []byte("these are notes, not pixels\n"))
	good := `{"prompt": "a red kite over the dunes"}` + "\n"
	cases := []struct {
		name, file string
		content    []byte
		want       []string // parts of the output
	}{
		{"empty file", "empty.jsonl", nil, []string{"empty.jsonl", "no jobs"}},
		{"binary file", "photo.jsonl", pngBytes(t, 4, 4), []string{"photo.jsonl:1:", "not a text file"}},
		{"invalid UTF-8", "utf8.jsonl", []byte(good + "{\"prompt\": \"caf\xe9 au lait\"}\n"), []string{"utf8.jsonl:2:", "prompt", "UTF-8"}},
		{"10 MB line", "long.jsonl", []byte(good + `{"prompt": "` + strings.Repeat("a", 10<<20) + `"}` + "\n"), []string{"long.jsonl:2:", "line is 10485774 bytes"}},
		{"CSV without a prompt column", "noprompt.csv", []byte("model,aspectRatio\nflux-kontext-pro,1:1\n"), []string{"noprompt.csv:1:", "prompt", "no prompt column"}},
		{"CSV with an unknown column", "colour.csv", []byte("prompt,colour\na kite,red\n"), []string{"colour.csv:1:", "colour"}},
		{"unknown model", "model.jsonl", []byte(good + `{"prompt": "a kite", "model": "flux-kontext-ultra"}` + "\n"), []string{"model.jsonl:2:", "model:", "flux-kontext-ultra"}},
		{"unknown ratio", "ratio.jsonl", []byte(good + `{"prompt": "a kite", "aspectRatio": "2:1"}` + "\n"), []string{"ratio.jsonl:2:", "aspectRatio:", "2:1"}},
		{"unknown format", "format.jsonl", []byte(good + `{"prompt": "a kite", "outputFormat": "gif"}` + "\n"), []string{"format.jsonl:2:", "outputFormat:", "gif"}},
		{"edit tolerance out of range", "tolerance.jsonl", []byte(good + `{"prompt": "a kite", "inputImage": "photo.png", "safetyTolerance": 5}` + "\n"),
			[]string{"tolerance.jsonl:2:", "safetyTolerance:", "0..2 for edits"}},
		{"missing local image", "missing.jsonl", []byte(good + `{"prompt": "a kite", "inputImage": "gone.png"}` + "\n"), []string{"missing.jsonl:2:", "inputImage:", "no such file"}},
		{"non-image input", "notimage.jsonl", []byte(good + `{"prompt": "a kite", "inputImage": "notes.png"}` + "\n"), []string{"notimage.jsonl:2:", "inputImage:", "is not an image"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := redistest.New(t)
			path := writeFile(t, filepath.Join(dir, tc.file), tc.content)
			code, out := kq(t, dir, cliEnv(env), "load", path, "--batch", "b")
			if code != exitUsage {
				t.Errorf("exit %d, want %d; output:\n%s", code, exitUsage, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%.2000s", w, out)
				}
			}
			keys, err := env.Keys(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 0 {
				t.Errorf("Redis holds %d keys after a refused load: %v", len(keys), keys)
			}
		})
	}
}

// Loading is idempotent: the same file again adds nothing, a grown file adds only its new lines,
// and identical lines are separate jobs. --skip-invalid enqueues the good lines and keeps the bad.
func TestLoadIsIdempotent(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "kites.jsonl")
	lines := `{"prompt": "a red kite"}` + "\n" + `{"prompt": "a red kite"}` + "\n" + `{"prompt": "a blue kite", "model": "flux-kontext-max"}` + "\n"
	writeFile(t, path, []byte(lines))
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})

	code, out := kq(t, dir, cliEnv(env), "load", path)
	if code != 0 || !strings.Contains(out, "batch kites: 3 jobs in "+path+" (3 new, 0 already loaded)") {
		t.Fatalf("first load: exit %d\n%s", code, out)
	}
	code, out = kq(t, dir, cliEnv(env), "load", path)
	if code != 0 || !strings.Contains(out, "(0 new, 3 already loaded)") {
		t.Fatalf("second load: exit %d\n%s", code, out)
	}
	writeFile(t, path, []byte(lines+`{"prompt": "a green kite"}`+"\n"+`{"prompt": "a red kite"}`+"\n"))
	code, out = kq(t, dir, cliEnv(env), "load", path)
	if code != 0 || !strings.Contains(out, "(2 new, 3 already loaded)") {
		t.Fatalf("load of the grown file: exit %d\n%s", code, out)
	}
	c, err := l.Counts(ctx, "kites")
	if err != nil {
		t.Fatal(err)
	}
	if c.Total != 5 || c.Queued != 5 {
		t.Errorf("counts %+v, want 5 queued", c)
	}
	if n := inLine(t, env, "kites"); n != 5 {
		t.Errorf("%d jobs in line for submission, want 5", n)
	}

	bad := filepath.Join(dir, "mixed.jsonl")
	writeFile(t, bad, []byte(`{"prompt": "a yellow kite"}`+"\n"+`{"prompt": "a kite", "model": "nope"}`+"\n"+`{"prompt": "a white kite"}`+"\n"))
	code, out = kq(t, dir, cliEnv(env), "load", bad, "--skip-invalid", "--batch", "kites")
	if code != 0 || !strings.Contains(out, "(2 new, 0 already loaded); 1 bad lines skipped, see "+bad+".rejects.jsonl") {
		t.Fatalf("--skip-invalid: exit %d\n%s", code, out)
	}
	rej, err := os.ReadFile(bad + ".rejects.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Line  int    `json:"line"`
		Field string `json:"field"`
		Error string `json:"error"`
		Raw   string `json:"raw"`
	}
	if err := json.Unmarshal(rej, &r); err != nil || r.Line != 2 || r.Field != "model" || !strings.Contains(r.Raw, `"nope"`) {
		t.Errorf("rejects file %s (%v)", rej, err)
	}
	if c, _ := l.Counts(ctx, "kites"); c.Total != 7 {
		t.Errorf("after --skip-invalid: %+v, want 7 jobs", c)
	}
}

// Flags give the fields a line leaves out; a line's own value wins.
func TestLoadDefaultsFromFlags(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "shoe.png"), pngBytes(t, 8, 8))
	path := writeFile(t, filepath.Join(dir, "edits.txt"), []byte("make it blue\nmake it red\n"))
	csvPath := writeFile(t, filepath.Join(dir, "gens.csv"), []byte("prompt,model\na kite,flux-kontext-pro\n"))

	code, out := kq(t, dir, cliEnv(env), "load", path, "--batch", "e", "--input-image", "shoe.png", "--output-format", "png",
		"--safety-tolerance", "1", "--enable-translation=false")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out = kq(t, dir, cliEnv(env), "load", csvPath, "--batch", "g", "--model", "flux-kontext-max", "--aspect-ratio", "1:1")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	var edits, gens []*jobs.Job
	ctx := context.Background()
	_ = l.Each(ctx, "e", func(j *jobs.Job) error { edits = append(edits, j); return nil })
	_ = l.Each(ctx, "g", func(j *jobs.Job) error { gens = append(gens, j); return nil })
	if len(edits) != 2 || len(gens) != 1 {
		t.Fatalf("%d edits, %d generations", len(edits), len(gens))
	}
	s := edits[0].Spec
	if s.InputImage != filepath.Join(dir, "shoe.png") || s.OutputFormat != "png" || s.SafetyTolerance == nil || *s.SafetyTolerance != 1 ||
		s.EnableTranslation == nil || *s.EnableTranslation || s.PromptUpsampling != nil {
		t.Errorf("edit spec %+v", s)
	}
	if g := gens[0].Spec; g.Model != "flux-kontext-pro" || g.AspectRatio != "1:1" {
		t.Errorf("generation spec %+v: the line's model must win over --model, --aspect-ratio fills the gap", g)
	}
}

// A dry run counts per model and mode, prices them as configured, times them at the rate, tells
// new jobs from loaded ones, and enqueues nothing.
func TestLoadDryRun(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "shoe.png"), pngBytes(t, 8, 8))
	first := `{"prompt": "a kite"}` + "\n" + `{"prompt": "a boat", "model": "flux-kontext-max"}` + "\n"
	path := writeFile(t, filepath.Join(dir, "plan.jsonl"), []byte(first))
	if code, out := kq(t, dir, cliEnv(env), "load", path); code != 0 {
		t.Fatalf("load: exit %d\n%s", code, out)
	}
	more := `{"prompt": "a kite at night"}` + "\n" + `{"prompt": "make it red", "inputImage": "shoe.png"}` + "\n" +
		`{"prompt": "make it gold", "inputImage": "shoe.png", "model": "flux-kontext-max"}` + "\n" + `{"prompt": "a boat at sea", "model": "flux-kontext-max"}` + "\n"
	writeFile(t, path, []byte(first+more))

	code, out := kq(t, dir, cliEnv(env, "KONTEXTQ_RATE=2/1m"), "load", path, "--dry-run", "--price", "flux-kontext-pro=5,flux-kontext-max=10")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	for _, w := range []string{
		"6 valid jobs for batch plan: 4 new, 2 already loaded",
		"flux-kontext-max  1  1  2  20",
		"flux-kontext-pro  1  1  2  10",
		"total  2  2  4  30",
		"cost: 30 credits at the configured prices",
		"Kie does not publish its prices",
		"time: about 2m at --rate 2/1m",
	} {
		if !strings.Contains(squeeze(out), w) {
			t.Errorf("dry run output lacks %q:\n%s", w, out)
		}
	}
	code, out = kq(t, dir, cliEnv(env), "load", path, "--dry-run")
	if code != 0 || !strings.Contains(out, "cost: not estimated. Kie does not publish its prices") {
		t.Errorf("dry run without prices: exit %d\n%s", code, out)
	}
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	if c, _ := l.Counts(context.Background(), "plan"); c.Total != 2 {
		t.Errorf("a dry run changed the ledger: %+v", c)
	}
	if n := inLine(t, env, "plan"); n != 2 {
		t.Errorf("a dry run changed the line: %d jobs in it, want the 2 loaded before", n)
	}
}

// squeeze collapses runs of spaces, so table output compares without its alignment.
func squeeze(s string) string {
	for strings.Contains(s, "   ") {
		s = strings.ReplaceAll(s, "   ", "  ")
	}
	return s
}

// An edit of a local file is uploaded through Kie's File Upload API right before its submission,
// and the edit Kie receives names the upload's URL.
func TestLocalEditIsUploadedThenSubmitted(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{})
	dir := t.TempDir()
	envv := workerEnv(env, sim, dir)
	writeFile(t, filepath.Join(dir, "shoe.png"), pngBytes(t, 30, 20))
	path := writeFile(t, filepath.Join(dir, "shoes.jsonl"), []byte(`{"id": "shoe-1", "prompt": "make the shoe red", "inputImage": "shoe.png"}`+"\n"))
	if code, out := kq(t, dir, envv, "load", path); code != 0 {
		t.Fatalf("load: exit %d\n%s", code, out)
	}
	if st := sim.Stats(); st.Uploads != 0 {
		t.Fatalf("%d uploads at load time; uploads happen right before submission", st.Uploads)
	}
	w := start(t, dir, envv, "worker")
	defer func() { _ = w.cmd.Process.Kill() }()
	code, out := kq(t, dir, envv, "status", "shoes", "--wait", "--every", "200ms")
	if code != 0 {
		t.Fatalf("status --wait: exit %d\n%s", code, out)
	}
	st := sim.Stats()
	tasks := sim.Tasks()
	if st.Uploads != 1 || len(tasks) != 1 {
		t.Fatalf("%d uploads and %d tasks, want 1 and 1", st.Uploads, len(tasks))
	}
	in := tasks[0].Request.InputImage
	if !tasks[0].IsEdit || !strings.HasPrefix(in, sim.URL+"/files/upload/") || !strings.HasSuffix(in, "/shoe-1.png") {
		t.Errorf("the edit sent inputImage %q, want the upload's URL", in)
	}
	// The simulator refuses an edit whose uploaded input does not exist (yet): a result proves
	// the upload came first. The archived image keeps the input's 3:2 shape.
	if w, h := tasks[0].Width, tasks[0].Height; w*2-h*3 > 3 || h*3-w*2 > 3 {
		t.Errorf("edit result %dx%d: the simulator did not read the uploaded input", tasks[0].Width, tasks[0].Height)
	}
	if _, err := os.Stat(filepath.Join(dir, "archive", "shoes", "shoe-1.jpeg")); err != nil {
		t.Errorf("archived image: %v", err)
	}
}
