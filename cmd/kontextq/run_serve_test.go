package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// While run works a batch, its dashboard and metrics are served on --listen.
func TestRunServesDashboardAndMetrics(t *testing.T) {
	env := redistest.New(t)
	sim := kietest.NewServer(t, kiesim.Options{GenTimeMedian: 6 * time.Second, GenTimeSigma: 0.1})
	dir := t.TempDir()
	file := filepath.Join(dir, "few.txt")
	if err := os.WriteFile(file, []byte("a kite over dunes\na kite over a lake\na kite over a city\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := start(t, dir, []string{
		"REDIS_URL=" + env.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + env.Prefix + "ns", "KONTEXTQ_LISTEN=" + addr, "KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s",
	}, "run", file, "--archive", filepath.Join(dir, "archive"))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The generation time (6 s) keeps the batch running while the test looks; the server starts
	// before the batch is loaded, so look until the batch shows.
	var metrics, queues string
	defer func() {
		if t.Failed() {
			t.Logf("last /metrics:\n%s\nlast /monitoring/api/queues:\n%s", metrics, queues)
		}
	}()
	eventually.True(t, 30*time.Second, "the batch in run's metrics", func() bool {
		code, body := get("/metrics")
		metrics = body
		return code == 200 && strings.Contains(body, `kontextq_batch_jobs{batch="few"`) &&
			strings.Contains(body, `kontextq_rate_configured_per_second{limiter="generate"}`)
	})
	// The dashboard lists every asynq queue of the Redis; another test deleting its queue at
	// the same moment makes one listing fail, so look again.
	eventually.True(t, 20*time.Second, "the batch's queues on run's dashboard", func() bool {
		code, body := get("/monitoring/api/queues")
		queues = body
		return code == 200 && strings.Contains(body, env.Prefix+"ns:submit")
	})
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	if !strings.Contains(p.out.String(), "dashboard: http://"+addr+"/monitoring/") {
		t.Errorf("run did not say where the dashboard is:\n%s", p.out.String())
	}
}
