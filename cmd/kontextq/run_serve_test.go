package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie/kietest"
)

// While run works a batch, its dashboard and metrics are served on --listen.
func TestRunServesDashboardAndMetrics(t *testing.T) {
	env := redistest.New(t)
	sim := kietest.NewServer(t, kietest.Options{GenTimeMedian: 1500 * time.Millisecond, GenTimeSigma: 0.1})
	dir := t.TempDir()
	file := filepath.Join(dir, "few.txt")
	if err := os.WriteFile(file, []byte("a kite over dunes\na kite over a lake\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := start(t, dir, []string{
		"REDIS_URL=" + env.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + env.Prefix + "ns", "KONTEXTQ_LISTEN=" + addr, "KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s",
	}, "run", file, "--archive", filepath.Join(dir, "archive"))
	var metrics string
	within(t, 30*time.Second, "run's metrics endpoint", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
		return resp.StatusCode == 200
	})
	for _, series := range []string{`kontextq_batch_jobs{batch="few"`, `kontextq_rate_configured_per_second{limiter="generate"}`} {
		if !strings.Contains(metrics, series) {
			t.Errorf("run's metrics lack %s:\n%s", series, metrics)
		}
	}
	resp, err := http.Get("http://" + addr + "/monitoring/api/queues")
	if err != nil {
		t.Fatalf("dashboard API: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), env.Prefix+"ns:submit") {
		t.Errorf("dashboard API answered %d without the batch's queues: %s", resp.StatusCode, body)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	if !strings.Contains(p.out.String(), "dashboard: http://"+addr+"/monitoring/") {
		t.Errorf("run did not say where the dashboard is:\n%s", p.out.String())
	}
}
