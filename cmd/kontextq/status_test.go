package main

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
	"github.com/kontextq/kontextq/ratelimit"
)

// workerEnv is the environment of kontextq processes that talk to the simulator.
func workerEnv(env *redistest.Env, sim *kiesim.Server, dir string) []string {
	return cliEnv(env,
		"KIE_API_KEY="+sim.Key, "KIE_BASE_URL="+sim.APIURL, "KIE_UPLOAD_URL="+sim.UploadURL,
		"KONTEXTQ_ARCHIVE="+filepath.Join(dir, "archive"), "KONTEXTQ_RATE=20/1s", "KONTEXTQ_POLL_RATE=50/1s",
		"KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s")
}

func fastSim(t *testing.T, o kiesim.Options) *kiesim.Server {
	o.GenerateLimit, o.GenerateWindow = 50, time.Second
	o.RecordInfoLimit, o.RecordInfoWindow = 100, time.Second
	o.GenTimeMedian, o.Seed = 300*time.Millisecond, 7
	return kietest.NewServer(t, o)
}

// A batch goes through cancel, retry, work, status --wait and export as a user would drive it:
// cancelled jobs are never submitted, retried ones are submitted once, the outcome is the exit
// code, and the manifest matches the archive.
func TestBatchLifecycle(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	ctx := context.Background()
	sim := fastSim(t, kiesim.Options{ContentPolicyWords: []string{"forbidden"}})
	dir := t.TempDir()
	envv := workerEnv(env, sim, dir)
	ledger := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})

	var lines []string
	for _, p := range []string{"a red kite", "a blue kite", "a green kite", "a forbidden kite", "a kite at night"} {
		lines = append(lines, `{"prompt": "`+p+`"}`)
	}
	path := writeFile(t, filepath.Join(dir, "kites.jsonl"), []byte(strings.Join(lines, "\n")+"\n"))
	okPath := writeFile(t, filepath.Join(dir, "boats.txt"), []byte("a paper boat\na toy boat\n"))
	for _, p := range []string{path, okPath} {
		if code, out := kq(t, dir, envv, "load", p); code != 0 {
			t.Fatalf("load %s: exit %d\n%s", p, code, out)
		}
	}

	code, out := kq(t, dir, envv, "cancel", "kites")
	if code != 0 || !strings.Contains(out, "batch kites: 5 queued jobs cancelled (0 submit tasks removed from the queue)") {
		t.Fatalf("cancel: exit %d\n%s", code, out)
	}
	if code, out := kq(t, dir, envv, "cancel", "kites"); code != 0 || !strings.Contains(out, "0 queued jobs cancelled") {
		t.Errorf("second cancel: exit %d\n%s", code, out)
	}
	if n, m := inLine(t, env, "kites"), inLine(t, env, "boats"); n != 0 || m != 2 {
		t.Errorf("%d jobs of kites and %d of boats in line after the cancel, want 0 and 2", n, m)
	}
	code, out = kq(t, dir, envv, "status", "kites")
	if code != 0 || !strings.Contains(squeeze(out), "failed  5 5 cancelled") {
		t.Errorf("status after cancel: exit %d\n%s", code, out)
	}
	code, out = kq(t, dir, envv, "retry", "kites", "--failed")
	if code != 0 || !strings.Contains(out, "5 failed jobs queued again (5 cancelled)") {
		t.Fatalf("retry: exit %d\n%s", code, out)
	}
	if code, out := kq(t, dir, envv, "retry", "kites", "--failed"); code != 0 || !strings.Contains(out, "no failed jobs to retry") {
		t.Errorf("second retry: exit %d\n%s", code, out)
	}

	w := start(t, dir, envv, "worker")
	defer func() { _ = w.cmd.Process.Kill() }()
	code, out = kq(t, dir, envv, "status", "kites", "--wait", "--every", "200ms")
	if code != exitFailed || !strings.Contains(out, "batch kites: 4 archived, 1 failed of 5") || !strings.Contains(out, ": rejected: ") {
		t.Errorf("status --wait with a rejected job: exit %d, want %d\n%s", code, exitFailed, out)
	}
	code, out = kq(t, dir, envv, "status", "boats", "--wait", "--every", "200ms")
	if code != exitOK || !strings.Contains(out, "batch boats: 2 archived, 0 failed of 2") {
		t.Errorf("status --wait: exit %d, want 0\n%s", code, out)
	}
	code, out = kq(t, dir, envv, "status")
	if code != 0 || !strings.Contains(squeeze(out), "kites  5  4  1  0  0  0  0  -  finished") {
		t.Errorf("status of every batch: exit %d\n%s", code, out)
	}
	if st := sim.Stats(); st.Accepted != 6 || st.DuplicateSubmissions != 0 {
		t.Errorf("Kie accepted %d tasks (%d duplicates); want 6: cancelled jobs never submitted, retried ones once", st.Accepted, st.DuplicateSubmissions)
	}

	manifest := filepath.Join(dir, "kites-manifest.jsonl")
	if code, out := kq(t, dir, envv, "export", "kites", "--out", manifest); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(rows) != 5 {
		t.Fatalf("manifest has %d rows, want 5:\n%s", len(rows), b)
	}
	archived := 0
	for _, l := range rows {
		var r manifestRow
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("row %s: %v", l, err)
		}
		switch r.State {
		case "archived":
			archived++
			img, err := os.ReadFile(r.Archive)
			sum := sha256.Sum256(img)
			if err != nil || hex.EncodeToString(sum[:]) != r.SHA256 || r.TaskID == "" {
				t.Errorf("row %s: the archive file does not match (%v)", l, err)
			}
		case "failed":
			if r.Reason != "rejected" || r.Error == "" {
				t.Errorf("failed row %s: want reason rejected and the error", l)
			}
		default:
			t.Errorf("row %s", l)
		}
	}
	if archived != 4 {
		t.Errorf("%d archived rows", archived)
	}
	code, out = kq(t, dir, envv, "export", "boats", "--format", "csv")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 3 || strings.Join(recs[0], ",") != strings.Join(manifestColumns, ",") ||
		recs[1][slices.Index(manifestColumns, "state")] != "archived" || recs[1][slices.Index(manifestColumns, "prompt")] != "a paper boat" {
		t.Errorf("CSV export: exit %d, %v\n%s", code, err, out)
	}

	// A job cancelled in the ledger whose submit task stays queued (one a worker had already
	// taken, say) is dropped by the worker without a call to Kie.
	third := writeFile(t, filepath.Join(dir, "late.txt"), []byte("a late kite\n"))
	if code, out := kq(t, dir, envv, "load", third); code != 0 {
		t.Fatalf("load: exit %d\n%s", code, out)
	}
	// The worker may win the race to submit it; what matters is that a cancelled job is not.
	rep, err := ledger.CancelQueued(ctx, "late", "cancelled", nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the submit queue to drain", func() bool { qi := submitQueue(t, env); return qi.Size == 0 })
	eventually.True(t, 30*time.Second, "the late batch to finish", func() bool { c, _ := ledger.Counts(ctx, "late"); return c.Done() })
	if st := sim.Stats(); rep.Cancelled == 1 && st.Accepted != 6 {
		t.Errorf("a cancelled job was submitted: Kie accepted %d tasks, want 6", st.Accepted)
	}
}

func TestPaceWindow(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		at       time.Duration
		archived int64
		want     float64
		ok       bool
	}{
		{0, 0, 0, false},
		{2 * time.Second, 1, 0, false}, // too short to say
		{30 * time.Second, 10, 20, true},
		{60 * time.Second, 20, 20, true},
		{90 * time.Second, 20, 10, true},     // over the last minute only: 30s ago 10, now 20
		{150 * time.Second, 20, 0, true},     // stalled for a minute
		{152 * time.Second, 21, 0.97, true},  // the window keeps a sample a minute back (90s)
		{300 * time.Second, 81, 24.32, true}, // samples far apart: the rate since the one before the minute
	}
	w := paceWindow{span: time.Minute}
	for _, s := range steps {
		got, ok := w.add(t0.Add(s.at), s.archived)
		if ok != s.ok || (ok && (got < s.want-0.01 || got > s.want+0.01)) {
			t.Errorf("at %v with %d archived: %.2f/min (%v), want %.2f (%v)", s.at, s.archived, got, ok, s.want, s.ok)
		}
	}
}

func TestPaceAndETA(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rate := ratelimit.Rate{Events: 20, Per: 10 * time.Second}
	cases := []struct {
		name string
		info jobs.BatchInfo
		now  time.Time
		pace string
		eta  string
	}{
		{"nothing submitted", jobs.BatchInfo{Counts: jobs.Counts{Total: 10, Queued: 10}}, t0,
			"nothing submitted yet", "at least 5s: 10 queued at --rate 20/10s, then their generation"},
		{"working", jobs.BatchInfo{Counts: jobs.Counts{Total: 100_000, Queued: 99_000, Submitted: 400, Archived: 600}, FirstSubmitted: t0},
			t0.Add(10 * time.Minute), "60.0 archived/min on average since the first submission, 10m ago",
			"at least 13h 45m: 99000 queued at --rate 20/10s, then their generation"},
		{"finished", jobs.BatchInfo{Counts: jobs.Counts{Total: 120, Archived: 120}, FirstSubmitted: t0, LastEnded: t0.Add(2 * time.Minute)},
			t0.Add(48 * time.Hour), "60.0 archived/min on average since the first submission, 2d ago", ""},
		{"last jobs at Kie", jobs.BatchInfo{Counts: jobs.Counts{Total: 3, Submitted: 2, Generated: 1}, FirstSubmitted: t0},
			t0.Add(30 * time.Second), "0 archived since the first submission 30s ago", "3 jobs at Kie or being archived; no more to submit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := averagePace(tc.info, tc.now); got != tc.pace {
				t.Errorf("pace %q, want %q", got, tc.pace)
			}
			if tc.eta == "" {
				return
			}
			if got := jobs.EstimateETA(tc.info.Counts, jobs.Share{}, rate).String(); got != tc.eta {
				t.Errorf("eta %q, want %q", got, tc.eta)
			}
		})
	}
}

// status --watch keeps showing the batch until interrupted, then exits 0; a missing batch is a
// usage error.
func TestStatusWatch(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "kites.txt"), []byte("a red kite\na blue kite\n"))
	if code, out := kq(t, dir, cliEnv(env), "load", path); code != 0 {
		t.Fatalf("load: exit %d\n%s", code, out)
	}
	p := start(t, dir, cliEnv(env), "status", "kites", "--watch", "--every", "100ms")
	eventually.True(t, 30*time.Second, "a progress line", func() bool {
		return strings.Contains(p.out.String(), "0/2 archived · 0 failed · 0 generating · 0 archiving · 2 queued")
	})
	time.Sleep(300 * time.Millisecond) // a few refreshes: unchanged counts print no new line
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("status --watch exited %d after an interrupt, want 0", code)
	}
	if n := strings.Count(p.out.String(), "2 queued"); n != 1 {
		t.Errorf("%d progress lines for unchanged counts, want 1:\n%s", n, p.out.String())
	}
	if code, out := kq(t, dir, cliEnv(env), "status", "nope"); code != exitUsage || !strings.Contains(out, `batch "nope": not in the ledger`) {
		t.Errorf("status of a missing batch: exit %d\n%s", code, out)
	}
}

// status shows a waiting batch's share of the submissions and an ETA that counts the other
// batches' turns; --priority puts a file's jobs ahead of every bulk batch.
func TestStatusShowsShareAndPriority(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{})
	dir := t.TempDir()
	envv := append(workerEnv(env, sim, dir), "KONTEXTQ_RATE=10/1s")
	lines := func(name string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s number %d\n", name, i)
		}
		return writeFile(t, filepath.Join(dir, name+".txt"), []byte(b.String()))
	}
	for _, f := range []string{lines("big", 50), lines("small", 5)} {
		if code, out := kq(t, dir, envv, "load", f); code != 0 {
			t.Fatalf("load: exit %d\n%s", code, out)
		}
	}
	code, out := kq(t, dir, envv, "status", "small")
	for _, want := range []string{
		"share: 50% of the submissions: 5 in line (bulk, in turn with 1 other batches)",
		"eta: at least 1s: 10 submissions at --rate 10/1s (5 queued here, the rest other batches' turns)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status small: exit %d, want %q in\n%s", code, want, out)
		}
	}
	if code, out := kq(t, dir, envv, "load", "--priority", "interactive", lines("urgent", 3)); code != 0 {
		t.Fatalf("load --priority interactive: exit %d\n%s", code, out)
	}
	code, out = kq(t, dir, envv, "status", "small")
	if want := "share: none for now: 5 in line (bulk, in turn with 1 other batches) after 3 jobs of higher priority"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("status small after an interactive load: exit %d, want %q in\n%s", code, want, out)
	}
	code, out = kq(t, dir, envv, "load", "--priority", "urgent", lines("bad", 1))
	if code != exitUsage || !strings.Contains(out, `--priority "urgent": want one of interactive, normal, bulk`) {
		t.Errorf("load --priority urgent: exit %d\n%s", code, out)
	}
}
