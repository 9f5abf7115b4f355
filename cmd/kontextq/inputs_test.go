package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/imagetest"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// kqStdin runs kontextq with stdin and returns its exit code and output.
func kqStdin(t *testing.T, dir string, envv []string, stdin string, args ...string) (int, string) {
	t.Helper()
	p := startWith(t, dir, envv, strings.NewReader(stdin), args...)
	code := p.wait(t, 2*time.Minute)
	return code, p.out.String()
}

// startWith is start with stdin.
func startWith(t *testing.T, dir string, envv []string, stdin *strings.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}, envv...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("kontextq %s output:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// photoHost serves edit inputs as a public image host would: a photo, a page where a photo was
// expected, and nothing else.
func photoHost(t *testing.T) *httptest.Server {
	t.Helper()
	photo := pngBytes(t, 30, 20)
	mux := http.NewServeMux()
	mux.HandleFunc("/photo.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(photo)
	})
	mux.HandleFunc("/gallery/photo.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html><body>Log in to see this photo</body></html>"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// --check-inputs names every line whose inputImage would fail at Kie, as FILE:LINE:
// inputImage: reason, and enqueues nothing; with --skip-invalid the good lines go ahead and the
// failing ones go to the rejects file. A dry run lists them too.
func TestLoadCheckInputs(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	host := photoHost(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "shoe.png"), pngBytes(t, 8, 8))
	lines := []string{
		`{"prompt": "make it red", "inputImage": "` + host.URL + `/photo.png"}`,
		`{"prompt": "make it blue", "inputImage": "` + host.URL + `/missing.png"}`,
		`{"prompt": "a kite"}`,
		`{"prompt": "make it gold", "inputImage": "` + host.URL + `/gallery/photo.png"}`,
		`{"prompt": "make it green", "inputImage": "shoe.png"}`,
		`{"prompt": "make it pink", "inputImage": "http://127.0.0.1:1/photo.png"}`,
		`{"prompt": "make it red again", "inputImage": "` + host.URL + `/photo.png"}`,
	}
	path := writeFile(t, filepath.Join(dir, "edits.jsonl"), []byte(strings.Join(lines, "\n")+"\n"))

	code, out := kq(t, dir, cliEnv(env), "load", path, "--check-inputs")
	if code != exitUsage {
		t.Fatalf("exit %d, want %d\n%s", code, exitUsage, out)
	}
	for _, w := range []string{
		path + `:2: inputImage: "` + host.URL + `/missing.png": HTTP 404 Not Found`,
		path + `:4: inputImage: "` + host.URL + `/gallery/photo.png": not an image (Content-Type text/html`,
		path + `:6: inputImage: "http://127.0.0.1:1/photo.png": cannot be fetched`,
		path + ": 3 bad line(s), listed above; nothing was enqueued",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	for _, n := range []string{":1:", ":3:", ":5:", ":7:"} {
		if strings.Contains(out, path+n) {
			t.Errorf("a good line is listed as bad (%s):\n%s", n, out)
		}
	}
	if keys, _ := env.Keys(context.Background()); len(keys) != 0 {
		t.Errorf("Redis holds %d keys after a refused load: %v", len(keys), keys)
	}

	code, out = kq(t, dir, cliEnv(env), "load", path, "--check-inputs", "--dry-run")
	if code != exitUsage || !strings.Contains(out, path+":2: inputImage:") || !strings.Contains(out, "3 bad line(s)") {
		t.Errorf("dry run: exit %d\n%s", code, out)
	}

	code, out = kq(t, dir, cliEnv(env), "load", path, "--check-inputs", "--skip-invalid")
	if code != 0 || !strings.Contains(out, "batch edits: 4 jobs in "+path+" (4 new, 0 already loaded); 3 bad lines skipped, see "+path+".rejects.jsonl") {
		t.Fatalf("--skip-invalid: exit %d\n%s", code, out)
	}
	rejects := readRejects(t, path+".rejects.jsonl")
	if len(rejects) != 3 || rejects[0].Line != 2 || rejects[1].Line != 4 || rejects[2].Line != 6 {
		t.Fatalf("rejects %+v, want lines 2, 4 and 6", rejects)
	}
	for _, r := range rejects {
		var spec jobs.Spec
		if r.Field != "inputImage" || json.Unmarshal([]byte(r.Raw), &spec) != nil || spec.Prompt == "" {
			t.Errorf("reject %+v: want the inputImage field and the job as a line to fix", r)
		}
	}
	var prompts []string
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	_ = l.Each(context.Background(), "edits", func(j *jobs.Job) error { prompts = append(prompts, j.Spec.Prompt); return nil })
	if len(prompts) != 4 || strings.Contains(strings.Join(prompts, ","), "blue") {
		t.Errorf("enqueued %q, want the 4 good lines", prompts)
	}

	// Without the flag the same file loads: the URLs are left to Kie.
	code, out = kq(t, dir, cliEnv(env), "load", path, "--batch", "unchecked")
	if code != 0 || !strings.Contains(out, "7 jobs") {
		t.Errorf("without --check-inputs: exit %d\n%s", code, out)
	}
}

type reject struct {
	Line  int    `json:"line"`
	Field string `json:"field"`
	Error string `json:"error"`
	Raw   string `json:"raw"`
}

func readRejects(t *testing.T, path string) []reject {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []reject
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r reject
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("rejects line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// "-" reads the job file from stdin: JSONL unless --format says otherwise, a --batch required,
// errors naming stdin, rejects beside the current directory as BATCH.rejects.jsonl.
func TestLoadFromStdin(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	dir, tmp := t.TempDir(), t.TempDir()
	envv := cliEnv(env, "TMPDIR="+tmp) // stdin's copy goes there, and must not stay
	writeFile(t, filepath.Join(dir, "shoe.png"), pngBytes(t, 8, 8))
	jsonl := `{"prompt": "a red kite"}` + "\n" + `{"prompt": "make it blue", "inputImage": "shoe.png"}` + "\n"

	code, out := kqStdin(t, dir, envv, jsonl, "load", "-")
	if code != exitUsage || !strings.Contains(out, "--batch: reading jobs from stdin (-) needs a batch name") {
		t.Errorf("without --batch: exit %d\n%s", code, out)
	}
	code, out = kqStdin(t, dir, envv, jsonl, "load", "-", "--batch", "piped")
	if code != 0 || !strings.Contains(out, "batch piped: 2 jobs in stdin (2 new, 0 already loaded)") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	var inputs []string
	_ = l.Each(context.Background(), "piped", func(j *jobs.Job) error { inputs = append(inputs, j.Spec.InputImage); return nil })
	if !strings.Contains(strings.Join(inputs, ","), filepath.Join(dir, "shoe.png")) {
		t.Errorf("inputImage paths %q: a relative path on stdin is relative to the current directory", inputs)
	}
	// The same stream again adds nothing.
	if code, out = kqStdin(t, dir, envv, jsonl, "load", "-", "--batch", "piped"); code != 0 || !strings.Contains(out, "(0 new, 2 already loaded)") {
		t.Errorf("again: exit %d\n%s", code, out)
	}

	code, out = kqStdin(t, dir, envv, "prompt,model\na boat,flux-kontext-max\na ship,flux-kontext-ultra\n", "load", "-", "--format", "csv", "--batch", "boats")
	if code != exitUsage || !strings.Contains(out, "stdin:3: model:") || !strings.Contains(out, "stdin: 1 bad line(s)") {
		t.Errorf("bad CSV on stdin: exit %d\n%s", code, out)
	}
	code, out = kqStdin(t, dir, envv, "prompt,model\na boat,flux-kontext-max\na ship,flux-kontext-ultra\n", "load", "-", "--format", "csv", "--batch", "boats", "--skip-invalid")
	if code != 0 || !strings.Contains(out, "1 bad lines skipped, see boats.rejects.jsonl") {
		t.Fatalf("--skip-invalid on stdin: exit %d\n%s", code, out)
	}
	if r := readRejects(t, filepath.Join(dir, "boats.rejects.jsonl")); len(r) != 1 || r[0].Line != 3 || !strings.Contains(r[0].Raw, "flux-kontext-ultra") {
		t.Errorf("rejects %+v", r)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("stdin's copies were left behind: %v", left)
	}
}

// run leaves nothing on disk (no archive, journal or rejects) when the key, Redis or the input
// is bad; "run -" works a batch from stdin, and an edit whose input Kie cannot fetch fails with
// Kie's reason while an edit of a reachable photo archives an image drawn from it.
func TestRunCreatesNothingUntilReadyAndReadsStdin(t *testing.T) {
	t.Parallel()
	sim := fastSim(t, kiesim.Options{})
	host := photoHost(t)
	good := `{"id": "kite", "prompt": "a red kite"}` + "\n" + `{"prompt": "a blue kite", "model": "nope"}` + "\n"
	simEnv := func(extra ...string) []string {
		return append([]string{"KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL, "KONTEXTQ_LOG_LEVEL=warn",
			"KONTEXTQ_RATE=20/1s", "KONTEXTQ_POLL_RATE=50/1s", "KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s"}, extra...)
	}
	for _, tc := range []struct {
		name  string
		envv  []string
		input string
		args  []string
		want  string
	}{
		{"refused key", simEnv("KIE_API_KEY=wrong-key"), good, []string{"--skip-invalid"}, "Kie.ai refused the key"},
		{"Redis down", simEnv("KIE_API_KEY="+sim.Key, "REDIS_URL=redis://127.0.0.1:1/0"), good, []string{"--skip-invalid"}, "does not answer"},
		{"bad line", simEnv("KIE_API_KEY=" + sim.Key), good, nil, "stdin:2: model:"},
		{"failing input", simEnv("KIE_API_KEY=" + sim.Key), `{"prompt": "x", "inputImage": "` + host.URL + `/gone.png"}` + "\n", []string{"--check-inputs"}, "stdin:1: inputImage:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			code, out := kqStdin(t, dir, tc.envv, tc.input, append([]string{"run", "-", "--batch", "b", "--no-serve"}, tc.args...)...)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want a failure saying %q:\n%s", code, tc.want, out)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("run left %v in its directory", entries)
			}
		})
	}

	env := redistest.New(t)
	dir := t.TempDir()
	envv := workerEnv(env, sim, dir)
	photo := filepath.Join(dir, "photo.png")
	writeFile(t, photo, imagetest.Halves(t, 60, 40))
	stdin := `{"id": "kite", "prompt": "a red kite"}` + "\n" +
		`{"id": "warm", "prompt": "make it warm", "inputImage": "photo.png", "outputFormat": "png"}` + "\n" +
		`{"id": "gone", "prompt": "make it cold", "inputImage": "` + host.URL + `/gone.png"}` + "\n"
	code, out := kqStdin(t, dir, envv, stdin, "run", "-", "--batch", "piped", "--no-serve")
	if code != exitFailed {
		t.Fatalf("exit %d, want %d (one edit fails)\n%s", code, exitFailed, out)
	}
	for _, w := range []string{
		"batch piped: 3 jobs in stdin",
		"batch piped: 2 archived, 1 failed of 3",
		`failed stdin:3 "make it cold" (job gone): rejected:`,
		"errorCode 400: inputImage could not be used: HTTP 404",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "archive", "piped", "warm.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// The archived edit keeps the photo's 3:2 shape and its red left and blue right.
	bd := img.Bounds()
	lr, _, lb, _ := img.At(bd.Dx()/5, bd.Dy()/2).RGBA()
	rr, _, rb, _ := img.At(4*bd.Dx()/5, bd.Dy()/2).RGBA()
	if absDiff(bd.Dx()*2, bd.Dy()*3) > 3 || lr <= lb || rb <= rr {
		t.Errorf("archived edit %dx%d, left r%d b%d, right r%d b%d: not drawn from the photo", bd.Dx(), bd.Dy(), lr>>8, lb>>8, rr>>8, rb>>8)
	}
	// Kie refused the input for good (errorCode 400): it was paid once and not submitted again.
	paid := 0
	for _, ti := range sim.Tasks() {
		if strings.HasSuffix(ti.Request.InputImage, "/gone.png") {
			paid++
		}
	}
	if st := sim.Stats(); st.InputsFailed != paid || paid != 1 {
		t.Errorf("the edit of a missing input was submitted %d times (%d inputs failed); want once", paid, st.InputsFailed)
	}
}

func absDiff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}
