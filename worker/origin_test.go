package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/worker"
)

// noOrigins is a store that refuses origin images.
type noOrigins struct{ archive.Store }

func (s noOrigins) Put(ctx context.Context, key string, r io.Reader, want archive.Info) error {
	if strings.Contains(key, ".origin.") {
		return fmt.Errorf("archive put %s: permission denied", key)
	}
	return s.Store.Put(ctx, key, r, want)
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// With --archive-origin the origin image is archived beside the result; failing to archive it
// leaves a note in the sidecar and never fails the result.
func TestOriginArchived(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		on        bool
		wrapStore func(archive.Store) archive.Store
		want      string // "stored", "note" or "none"
	}{
		{name: "off by default", want: "none"},
		{name: "on", on: true, want: "stored"},
		{name: "origin refused by the store", on: true, wrapStore: func(s archive.Store) archive.Store { return noOrigins{s} }, want: "note"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{sim: calmSim(), wrapStore: tc.wrapStore, worker: worker.Options{ArchiveOrigin: tc.on}})
			const n = 3
			for i := range n {
				b.enqueue(t, jobs.Spec{Batch: "origins", Prompt: fmt.Sprintf("a tin robot, pose %d", i)})
			}
			if c := b.run(t, "origins", time.Minute); c.Archived != n {
				t.Fatalf("counts %+v, want every result archived", c)
			}
			b.checkArchive(t, "origins")
			ctx := context.Background()
			_ = b.ledger.Each(ctx, "origins", func(j *jobs.Job) error {
				sc, err := archive.ReadSidecar(ctx, b.store, j.Batch, j.ID)
				if err != nil {
					t.Fatal(err)
				}
				origins, _ := filepath.Glob(filepath.Join(b.dir, "origins", j.ID+".origin.*"))
				switch tc.want {
				case "none":
					if sc.Origin != nil || len(origins) != 0 {
						t.Errorf("%s: origin archived though not asked: %+v %v", j.ID, sc.Origin, origins)
					}
				case "stored":
					ti, _ := b.sim.Task(j.TaskID)
					if sc.Origin == nil || sc.Origin.Error != "" || sc.Origin.Key != "origins/"+j.ID+".origin.jpeg" {
						t.Fatalf("%s: sidecar origin %+v", j.ID, sc.Origin)
					}
					if got := fileSHA(t, filepath.Join(b.dir, sc.Origin.Key)); got != sc.Origin.SHA256 || got != ti.ImageSHA256 {
						t.Errorf("%s: origin file sha256 %s, sidecar %s, simulator %s", j.ID, got, sc.Origin.SHA256, ti.ImageSHA256)
					}
				case "note":
					if sc.Origin == nil || !strings.Contains(sc.Origin.Error, "permission denied") || sc.Origin.Key != "" || len(origins) != 0 {
						t.Errorf("%s: sidecar origin %+v, files %v; want a note of the failure and no file", j.ID, sc.Origin, origins)
					}
				}
				return nil
			})
		})
	}
}

// Rearchive restores a missing or corrupt image while Kie still serves it, and says so when Kie
// no longer does.
func TestRearchive(t *testing.T) {
	t.Parallel()
	sim := calmSim()
	sim.ResultTTL = time.Hour
	b := setup(t, setupOpts{sim: sim})
	b.enqueue(t, jobs.Spec{Batch: "fix", ID: "lost", Prompt: "a red door"}, jobs.Spec{Batch: "fix", ID: "bad", Prompt: "a blue door"})
	if c := b.run(t, "fix", time.Minute); c.Archived != 2 {
		t.Fatalf("counts %+v", c)
	}
	ctx := context.Background()
	lost, _ := b.ledger.Get(ctx, jobs.Ref{Batch: "fix", ID: "lost"})
	bad, _ := b.ledger.Get(ctx, jobs.Ref{Batch: "fix", ID: "bad"})
	if err := os.Remove(lost.Location); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad.Location, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*jobs.Job{lost, bad} {
		sc, err := archive.ReadSidecar(ctx, b.store, j.Batch, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.w.Rearchive(ctx, sc)
		if err != nil {
			t.Fatalf("%s: %v", j.ID, err)
		}
		if sum := fileSHA(t, j.Location); sum != j.SHA256 || got.SHA256 != j.SHA256 || !got.ArchivedAt.After(sc.ArchivedAt) {
			t.Errorf("%s: file sha256 %s, sidecar %+v; want %s", j.ID, sum, got, j.SHA256)
		}
	}
	b.checkArchive(t, "fix")

	// An hour later Kie has dropped the results.
	b.sim.Update(func(o *kiesim.Options) { o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } })
	sc, _ := archive.ReadSidecar(ctx, b.store, "fix", "lost")
	if _, err := b.w.Rearchive(ctx, sc); !errors.Is(err, worker.ErrResultGone) {
		t.Errorf("re-archiving an expired result: %v, want ErrResultGone", err)
	}
	if sum := fileSHA(t, lost.Location); sum != lost.SHA256 {
		t.Errorf("a failed re-archive changed the archived file")
	}
}
