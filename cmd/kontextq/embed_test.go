package main

import (
	"bytes"
	"context"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
)

// With --embed-metadata an archived image carries its prompt and IPTC DigitalSourceType, its
// sidecar records the hash of what Kie served, and verify passes; without it, the archived bytes
// are exactly what Kie served.
func TestEmbedMetadata(t *testing.T) {
	const prompt = `a "red" <barn> & 'Füchse' — 雪`
	const escaped = `a &#34;red&#34; &lt;barn&gt; &amp; &#39;Füchse&#39; — 雪`
	jobsFile := `{"id": "j", "prompt": "a \"red\" <barn> & 'Füchse' — 雪"}` + "\n" +
		`{"id": "p", "prompt": "a \"red\" <barn> & 'Füchse' — 雪", "outputFormat": "png"}` + "\n"

	runIt := func(t *testing.T, v *verifyEnv, args ...string) []*jobs.Job {
		t.Helper()
		file := filepath.Join(v.dir, "prov.jsonl")
		if err := os.WriteFile(file, []byte(jobsFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if code := start(t, v.dir, v.env, append([]string{"run"}, append(args, file)...)...).wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("run exited %d", code)
		}
		var js []*jobs.Job
		if err := v.ledger.Each(context.Background(), "prov", func(j *jobs.Job) error { js = append(js, j); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(js) != 2 {
			t.Fatalf("%d jobs in the ledger, want 2", len(js))
		}
		return js
	}

	t.Run("off", func(t *testing.T) {
		v := newVerifyEnv(t, "")
		for _, j := range runIt(t, v) {
			ti, _ := v.sim.Task(j.TaskID)
			if got := sha256File(t, j.Location); got != ti.ImageSHA256 {
				t.Errorf("%s: archived sha256 %s, Kie served %s", j.ID, got, ti.ImageSHA256)
			}
			data, _ := os.ReadFile(j.Location)
			if bytes.Contains(data, []byte("DigitalSourceType")) {
				t.Errorf("%s: provenance embedded although not asked for", j.ID)
			}
		}
	})

	t.Run("on", func(t *testing.T) {
		v := newVerifyEnv(t, "")
		for _, j := range runIt(t, v, "--embed-metadata") {
			ti, _ := v.sim.Task(j.TaskID)
			data, err := os.ReadFile(j.Location)
			if err != nil {
				t.Fatal(err)
			}
			if _, format, err := image.Decode(bytes.NewReader(data)); err != nil || format != j.Spec.Format() {
				t.Errorf("%s: archived image decodes as %q: %v", j.ID, format, err)
			}
			for _, want := range []string{"<kontextq:prompt>" + escaped + "</kontextq:prompt>",
				"<Iptc4xmpExt:DigitalSourceType>" + archive.DigitalSourceType + "<", j.TaskID} {
				if !bytes.Contains(data, []byte(want)) {
					t.Errorf("%s (%s): archived image lacks %q", j.ID, j.Spec.Format(), want)
				}
			}
			if j.Spec.Format() == "png" && !bytes.Contains(data, []byte("Description\x00\x00\x00\x00\x00"+prompt)) {
				t.Errorf("%s: PNG lacks the prompt as a plain iTXt entry", j.ID)
			}
			sc, err := archive.ReadSidecar(context.Background(), mustStore(t, filepath.Join(v.dir, "archive")), "prov", j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256File(t, j.Location); sc.SHA256 != got || sc.SourceSHA256 != ti.ImageSHA256 || got == ti.ImageSHA256 {
				t.Errorf("%s: sidecar sha256 %s sourceSha256 %s; archived file %s, Kie served %s", j.ID, sc.SHA256, sc.SourceSHA256, got, ti.ImageSHA256)
			}
		}
		code, out := v.verify(t, "prov")
		if code != 0 || !strings.Contains(out, "2 intact") || !strings.Contains(out, "2 carry embedded provenance") {
			t.Fatalf("verify of a batch archived with provenance exited %d:\n%s", code, out)
		}
	})
}

func mustStore(t *testing.T, loc string) archive.Store {
	t.Helper()
	s, err := archive.Open(context.Background(), loc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
