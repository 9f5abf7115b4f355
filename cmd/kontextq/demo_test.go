package main

import (
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `kontextq demo` from a clean environment (no key, no Redis, no settings) archives every image
// of the bundled batch, serves a dashboard that answers while it runs, and exits 0 in well
// under a minute.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	began := time.Now()
	p := start(t, dir, nil, "demo", "--listen", "127.0.0.1:0", "--keep-serving")
	url := regexp.MustCompile(`dashboard stays up at (http://[^\s;]+)`)
	var dashboard string
	within(t, time.Minute, "the demo's batch to finish", func() bool {
		if m := url.FindStringSubmatch(p.out.String()); m != nil {
			dashboard = m[1]
			return true
		}
		select {
		case <-p.done:
			t.Fatalf("the demo exited early:\n%s", p.out.String())
		default:
		}
		return false
	})
	if d := time.Since(began); d > time.Minute {
		t.Errorf("the demo took %s", d)
	}
	// The dashboard's own API, as its page calls it.
	res, err := http.Get(dashboard + "api/queues")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"kontextq:submit"`) {
		t.Errorf("dashboard api/queues: %d %s", res.StatusCode, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, p.out.String())
	}

	want, err := demoFiles.ReadFile("demo/demo.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(want), "\n")
	imgs, _ := filepath.Glob(filepath.Join(dir, "kontextq-demo", "demo-*", "*.*g"))
	if len(imgs) != n {
		t.Fatalf("%d images on disk, want %d:\n%s", len(imgs), n, p.out.String())
	}
	for _, img := range imgs {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		cfg, format, err := image.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width == 0 || !strings.HasSuffix(img, "."+format) {
			t.Errorf("%s is not a %s image: %v", img, filepath.Ext(img), err)
		}
	}
	if !strings.Contains(p.out.String(), "11 archived, 0 failed of 11") {
		t.Errorf("no summary of the batch in the output:\n%s", p.out.String())
	}
}
