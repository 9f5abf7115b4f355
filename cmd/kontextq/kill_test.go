package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// A worker killed with SIGKILL mid-batch and started again finishes the batch without paying
// for any job twice.
func TestWorkerKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a worker; takes about a minute")
	}
	env := redistest.New(t)
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 500 * time.Millisecond, Seed: 3,
	})
	dir := t.TempDir()
	ns := env.Prefix + "ns"
	const n = 80
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"prompt": "a paper boat on a pond, take %d"}`, i))
	}
	file := filepath.Join(dir, "boats.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	envv := []string{
		"REDIS_URL=" + env.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + ns,
		"KONTEXTQ_ARCHIVE=" + filepath.Join(dir, "archive"), "KONTEXTQ_RATE=10/1s", "KONTEXTQ_POLL_RATE=40/1s",
		"KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s", "KONTEXTQ_LOG_LEVEL=warn",
	}
	nsName := ns
	ledger := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: nsName})
	ctx := context.Background()

	// Load without working, then start a worker.
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: nsName})
	defer enq.Close()
	for _, l := range lines {
		var s jobs.Spec
		s.Batch = "boats"
		s.Prompt = strings.TrimSuffix(strings.TrimPrefix(l, `{"prompt": "`), `"}`)
		if _, err := enq.Enqueue(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	w1 := start(t, dir, envv, "worker")
	eventually.True(t, time.Minute, "some jobs archived", func() bool {
		c, _ := ledger.Counts(ctx, "boats")
		return c.Archived >= 10
	})
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	w1.wait(t, 10*time.Second)
	before, _ := ledger.Counts(ctx, "boats")
	if before.Done() {
		t.Fatalf("the batch finished before the kill (%+v): the test proves nothing", before)
	}
	t.Logf("killed the worker at %+v", before)

	metricsAddr := freeAddr(t)
	w2 := start(t, dir, envv, "worker", "--listen", metricsAddr)
	eventually.True(t, 3*time.Minute, "the batch to finish after the restart", func() bool {
		c, _ := ledger.Counts(ctx, "boats")
		return c.Done()
	})
	// The restarted worker's own counters are served while it runs.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("worker metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^kontextq_process_archived_images_total [1-9]`).Match(body) {
		t.Errorf("worker metrics show no archived image:\n%s", body)
	}
	// Beside them, the health checks a supervisor probes.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatalf("worker %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("worker %s: %s, want 200 while it runs and Redis answers", path, resp.Status)
		}
	}
	_ = w2.cmd.Process.Signal(syscall.SIGTERM)
	if code := w2.wait(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d after SIGTERM, want 0", code)
	}

	st := sim.Stats()
	if st.DuplicateSubmissions != 0 {
		t.Errorf("%d jobs were submitted twice", st.DuplicateSubmissions)
	}
	c, _ := ledger.Counts(ctx, "boats")
	if int(c.Archived)+int(c.Failed) != n {
		t.Errorf("counts %+v", c)
	}
	fails, _ := ledger.Failures(ctx, "boats")
	for _, j := range fails {
		// The only acceptable failure is a generate call cut off by the kill itself: it is failed
		// rather than paid twice.
		if j.Reason != jobs.Interrupted {
			t.Errorf("%s failed: %s: %s", j.ID, j.Reason, j.Error)
		}
	}
	// Each job was paid for at most once: archived ones exactly once, interrupted ones at most once.
	if st.Accepted < int(c.Archived) || st.Accepted > int(c.Archived)+len(fails) {
		t.Errorf("simulator accepted %d tasks for %d archived and %d interrupted jobs", st.Accepted, c.Archived, len(fails))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "archive", "boats", "*.jpeg"))
	if len(files) != int(c.Archived) {
		t.Errorf("%d images on disk, %d archived", len(files), c.Archived)
	}
}
