package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// `kontextq run` without REDIS_URL keeps its queues in memory. Killed mid-batch (SIGKILL: no
// chance to clean up) and started again with the same command, it finishes the batch from its
// journal without paying for any job twice.
func TestRunInMemoryKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a run; takes about half a minute")
	}
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 60, RecordInfoWindow: time.Second,
		GenTimeMedian: 700 * time.Millisecond, Seed: 4,
	})
	dir := t.TempDir()
	const n = 60
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"prompt": "a paper lantern on a river, take %d"}`, i))
	}
	if err := os.WriteFile(filepath.Join(dir, "lanterns.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_ARCHIVE=" + filepath.Join(dir, "archive"), "KONTEXTQ_RATE=10/1s", "KONTEXTQ_POLL_RATE=50/1s",
		"KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s", "KONTEXTQ_LOG_LEVEL=warn",
	}
	images := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "archive", "lanterns", "*.jpeg"))
		return len(m)
	}

	first := start(t, dir, env, "run", "lanterns.jsonl")
	eventually.True(t, time.Minute, "some images archived", func() bool { return images() >= 10 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)
	if !strings.Contains(first.out.String(), "using an in-memory Redis") {
		t.Fatalf("run did not say it used the in-memory Redis:\n%s", first.out.String())
	}
	before := images()
	if before >= n {
		t.Fatalf("the batch finished before the kill: the test proves nothing")
	}
	t.Logf("killed with %d of %d images archived", before, n)

	second := start(t, dir, env, "run", "lanterns.jsonl")
	code := second.wait(t, 2*time.Minute)
	out := second.out.String()
	if code != exitOK && code != exitFailed {
		t.Fatalf("the second run exited %d:\n%s", code, out)
	}
	m := regexp.MustCompile(`journal: (\d+) jobs were submitted before: (\d+) already archived, (\d+) resumed at Kie, (\d+) interrupted`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the second run restored nothing from the journal:\n%s", out)
	}
	resumed, _ := strconv.Atoi(m[3])
	interrupted, _ := strconv.Atoi(m[4])
	if resumed == 0 {
		t.Errorf("no job was at Kie unfinished when the run was killed: the test proves little\n%s", out)
	}
	// The only acceptable failure is a generate call cut off by the kill: it is failed rather
	// than paid twice.
	failed := regexp.MustCompile(`(?m)^\s*failed .*?\(job (\S+)\): (\S+):`).FindAllStringSubmatch(out, -1)
	for _, f := range failed {
		if f[2] != "interrupted" {
			t.Errorf("job %s failed: %s", f[1], f[2])
		}
	}
	if len(failed) != interrupted {
		t.Errorf("%d jobs failed, the journal interrupted %d", len(failed), interrupted)
	}

	st := sim.Stats()
	if st.DuplicateSubmissions != 0 || st.LiveDuplicates != 0 {
		t.Errorf("%d jobs were submitted twice (%d while the first task was alive)", st.DuplicateSubmissions, st.LiveDuplicates)
	}
	if st.Accepted > n {
		t.Errorf("Kie accepted %d tasks for %d jobs", st.Accepted, n)
	}
	if got := images(); got != n-interrupted {
		t.Errorf("%d images on disk, want %d (%d jobs, %d interrupted)", got, n-interrupted, n, interrupted)
	}
	t.Logf("after the restart: %s resumed at Kie, %s already archived, %d interrupted; Kie accepted %d tasks",
		m[3], m[2], interrupted, st.Accepted)
}
