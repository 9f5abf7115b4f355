package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// verifyEnv is a simulator, a Redis namespace and the environment that points kontextq at them.
type verifyEnv struct {
	dir    string
	sim    *kiesim.Server
	ledger *jobs.Ledger
	env    []string
}

func newVerifyEnv(t *testing.T, archiveLoc string, extra ...string) *verifyEnv {
	t.Helper()
	r := redistest.New(t)
	sim := kietest.NewServer(t, kiesim.Options{
		GenerateLimit: 20, GenerateWindow: time.Second, RecordInfoLimit: 50, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond,
	})
	dir := t.TempDir()
	if archiveLoc == "" {
		archiveLoc = filepath.Join(dir, "archive")
	}
	ns := r.Prefix + "ns"
	env := append([]string{
		"REDIS_URL=" + r.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + ns, "KONTEXTQ_ARCHIVE=" + archiveLoc,
		"KONTEXTQ_FIRST_POLL=300ms", "KONTEXTQ_POLL_INTERVAL=300ms", "KONTEXTQ_LOG_LEVEL=warn",
	}, extra...)
	return &verifyEnv{dir: dir, sim: sim, ledger: jobs.NewLedger(r.Client, jobs.LedgerOptions{Namespace: ns}), env: env}
}

// runBatch runs a batch of n prompts to the end and returns its jobs.
func (v *verifyEnv) runBatch(t *testing.T, batch string, n int) []*jobs.Job {
	t.Helper()
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"id": "img%d", "prompt": "a glass of water on a table, view %d"}`, i, i))
	}
	file := filepath.Join(v.dir, batch+".jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := start(t, v.dir, v.env, "run", file).wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("run exited %d", code)
	}
	var js []*jobs.Job
	if err := v.ledger.Each(context.Background(), batch, func(j *jobs.Job) error { js = append(js, j); return nil }); err != nil {
		t.Fatal(err)
	}
	return js
}

// verify runs kontextq verify and returns its exit code and output.
func (v *verifyEnv) verify(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := start(t, v.dir, v.env, append([]string{"verify"}, args...)...)
	code := p.wait(t, time.Minute)
	return code, p.out.String()
}

func TestVerifyAndRepair(t *testing.T) {
	v := newVerifyEnv(t, "")
	js := v.runBatch(t, "glasses", 4)
	if code, out := v.verify(t, "glasses"); code != 0 || !strings.Contains(out, "4 images verified, 4 intact") {
		t.Fatalf("verify of an intact batch exited %d:\n%s", code, out)
	}
	deleted, corrupted := js[1], js[2]
	if err := os.Remove(deleted.Location); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(corrupted.Location, []byte("\xff\xd8 not the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := v.verify(t, "glasses")
	if code != 1 {
		t.Errorf("verify with a missing and a corrupt image exited %d, want 1", code)
	}
	for _, want := range []string{"missing  " + deleted.ID, "corrupt  " + corrupted.ID, "2 with problems"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}

	code, out = v.verify(t, "glasses", "--repair")
	if code != 0 || strings.Count(out, "repaired ") != 2 {
		t.Errorf("verify --repair exited %d, want 0 with two repairs:\n%s", code, out)
	}
	for _, j := range []*jobs.Job{deleted, corrupted} {
		ti, _ := v.sim.Task(j.TaskID)
		if got := sha256File(t, j.Location); got != ti.ImageSHA256 {
			t.Errorf("%s after repair: sha256 %s, Kie's image %s", j.ID, got, ti.ImageSHA256)
		}
	}
	if code, out := v.verify(t, "glasses"); code != 0 {
		t.Errorf("verify after repair exited %d:\n%s", code, out)
	}

	// Once Kie has dropped the result, a lost image cannot be repaired, and verify says so.
	v.sim.Update(func(o *kiesim.Options) { o.Now = func() time.Time { return time.Now().Add(15 * 24 * time.Hour) } })
	if err := os.Remove(deleted.Location); err != nil {
		t.Fatal(err)
	}
	code, out = v.verify(t, "glasses", "--repair")
	if code != 1 || !strings.Contains(out, "expired, cannot repair") {
		t.Errorf("repairing an expired result exited %d, want 1 and \"expired, cannot repair\":\n%s", code, out)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// kontextq run archives to an S3-compatible bucket end to end, and verify reads it back.
func TestRunAndVerifyOnS3(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("images"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(s3.Close)
	aws := map[string]string{
		"AWS_ACCESS_KEY_ID": "kontextq-test", "AWS_SECRET_ACCESS_KEY": "kontextq-test-secret", "AWS_REGION": "us-east-1",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	}
	var extra []string
	for k, val := range aws {
		t.Setenv(k, val)
		extra = append(extra, k+"="+val)
	}
	loc := "s3://images/kq?endpoint=" + s3.URL + "&region=us-east-1&use_path_style=true" +
		"&request_checksum_calculation=when_required&response_checksum_validation=when_required"
	v := newVerifyEnv(t, loc, extra...)
	js := v.runBatch(t, "bucket", 3)

	store, err := archive.Open(context.Background(), loc)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, j := range js {
		ti, _ := v.sim.Task(j.TaskID)
		sum, err := archive.HashObject(context.Background(), store, archive.ImageKey("bucket", j.ID, "jpeg"))
		if j.State != jobs.Archived || err != nil || sum != ti.ImageSHA256 || !strings.HasPrefix(j.Location, "s3://images/kq/bucket/") {
			t.Errorf("%s: state %s at %s, sha256 %s (%v), Kie's image %s", j.ID, j.State, j.Location, sum, err, ti.ImageSHA256)
		}
	}
	if code, out := v.verify(t, "bucket"); code != 0 || !strings.Contains(out, "3 images verified, 3 intact") {
		t.Errorf("verify on S3 exited %d:\n%s", code, out)
	}
}

// verify run from another directory checks the batch where it was archived: it neither reports
// it missing nor repairs it into a new archive there; it counts each image once (an image lost
// with its sidecar is one problem and one repair), refuses to repair into another archive, and
// exits 1 while a problem is left.
func TestVerifyFromAnotherDirectory(t *testing.T) {
	v := newVerifyEnv(t, "archive") // relative: the run's ./archive
	js := v.runBatch(t, "glasses", 3)
	var env []string
	for _, e := range v.env {
		if !strings.HasPrefix(e, "KONTEXTQ_ARCHIVE=") {
			env = append(env, e)
		}
	}
	elsewhere := t.TempDir()
	verify := func(args ...string) (int, string) {
		t.Helper()
		p := start(t, elsewhere, env, append([]string{"verify", "glasses"}, args...)...)
		return p.wait(t, time.Minute), p.out.String()
	}
	noArchiveHere := func(names ...string) {
		t.Helper()
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(elsewhere, n)); err == nil {
				t.Errorf("verify created %s in the directory it ran from", n)
			}
		}
	}

	if code, out := verify(); code != 0 || !strings.Contains(out, "3 images verified, 3 intact, 0 with problems") {
		t.Errorf("verify from another directory exited %d:\n%s", code, out)
	}
	lost := js[0]
	if err := os.Remove(lost.Location); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(strings.TrimSuffix(lost.Location, filepath.Ext(lost.Location)) + ".json"); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(); code != 1 || !strings.Contains(out, "3 images verified, 2 intact, 1 with problems") {
		t.Errorf("verify of a lost image and sidecar exited %d, want 1 and one image with problems:\n%s", code, out)
	}
	code, out := verify("--repair", "--archive", "copy")
	if code != exitUsage || !strings.Contains(out, "--repair writes only into the batch's own archive") {
		t.Errorf("verify --repair into another archive exited %d, want %d and a refusal:\n%s", code, exitUsage, out)
	}
	if code, out := verify("--repair"); code != 0 || !strings.Contains(out, "1 with problems, 1 repaired") || strings.Count(out, "repaired ") != 1 {
		t.Errorf("verify --repair exited %d, want 0 with one image repaired once:\n%s", code, out)
	}
	ti, _ := v.sim.Task(lost.TaskID)
	if got := sha256File(t, lost.Location); got != ti.ImageSHA256 {
		t.Errorf("the repaired image in the batch's archive: sha256 %s, Kie's image %s", got, ti.ImageSHA256)
	}
	if j, err := v.ledger.Get(context.Background(), jobs.Ref{Batch: "glasses", ID: lost.ID}); err != nil {
		t.Error(err)
	} else if j.Location != lost.Location {
		t.Errorf("the ledger's location after repair: %q, want %q", j.Location, lost.Location)
	}
	if code, out := verify(); code != 0 || !strings.Contains(out, "3 images verified, 3 intact") {
		t.Errorf("verify after the repair exited %d:\n%s", code, out)
	}
	noArchiveHere("archive", "copy")
}
