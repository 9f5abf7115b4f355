package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// serve's /metrics reports the deployment's counters while only a separate worker process
// works: what operators alert on is true whichever process did the work.
func TestServeReportsTheDeploymentsCounters(t *testing.T) {
	env := redistest.New(t)
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, Seed: 5,
	})
	dir := t.TempDir()
	ns := env.Prefix + "ns"
	envv := []string{
		"REDIS_URL=" + env.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + ns, "KONTEXTQ_ARCHIVE=" + filepath.Join(dir, "archive"),
		"KONTEXTQ_FIRST_POLL=500ms", "KONTEXTQ_POLL_INTERVAL=500ms", "KONTEXTQ_LOG_LEVEL=warn",
	}
	const n = 12
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: ns})
	defer enq.Close()
	for i := range n {
		if _, err := enq.Enqueue(context.Background(), jobs.Spec{Batch: "gauges", Prompt: fmt.Sprintf("a brass gauge, dial %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	serveAddr, workerAddr := freeAddr(t), freeAddr(t)
	srv := start(t, dir, envv, "serve", "--listen", serveAddr, "--insecure-no-token")
	w := start(t, dir, envv, "worker", "--listen", workerAddr)

	scrape := func(addr string) string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	value := func(body, series string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	var body string
	eventually.True(t, 90*time.Second, "serve's /metrics to count every image archived", func() bool {
		body = scrape(serveAddr)
		return value(body, "kontextq_archived_images_total") == n && value(body, "kontextq_submissions_total") == n &&
			value(body, "kontextq_sweeps_total") >= 1
	})
	for _, s := range []string{"kontextq_archived_bytes_total", "kontextq_generation_seconds_count"} {
		if v := value(body, s); v <= 0 {
			t.Errorf("serve's %s = %v, want > 0", s, v)
		}
	}
	// serve did none of the work: its own process series stay at zero.
	if v := value(body, "kontextq_process_archived_images_total"); v != 0 {
		t.Errorf("serve's kontextq_process_archived_images_total = %v, want 0", v)
	}
	if !regexp.MustCompile(`(?m)^kontextq_build_info\{go="go[^"]+",revision="[^"]*",version="[^"]+"\} 1$`).MatchString(body) {
		t.Errorf("serve's /metrics has no kontextq_build_info")
	}
	// The worker's own endpoint has its process series, and not the deployment's names.
	wb := scrape(workerAddr)
	if v := value(wb, "kontextq_process_archived_images_total"); v != n {
		t.Errorf("the worker's kontextq_process_archived_images_total = %v, want %d", v, n)
	}
	if v := value(wb, "kontextq_archived_images_total"); v != -1 {
		t.Errorf("the worker's endpoint serves the deployment's kontextq_archived_images_total too (%v): summing would double count", v)
	}
	if !regexp.MustCompile(`(?m)^kontextq_build_info\{`).MatchString(wb) {
		t.Errorf("the worker's /metrics has no kontextq_build_info")
	}
	for _, p := range []*proc{w, srv} {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0; output:\n%s", code, p.out.String())
		}
	}
}

func TestVersion(t *testing.T) {
	p := start(t, t.TempDir(), nil, "version")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.out.String())
	}
	if !regexp.MustCompile(`^kontextq \S+ .*go1\.\d+`).MatchString(p.out.String()) {
		t.Errorf("kontextq version printed %q", p.out.String())
	}
}
