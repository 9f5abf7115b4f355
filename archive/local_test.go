package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/archive/archivetest"
)

func openLocal(t *testing.T) archive.Store {
	t.Helper()
	s, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestLocalConformance(t *testing.T) {
	archivetest.Run(t, openLocal)
}

func infoOf(b []byte) archive.Info {
	h := sha256.Sum256(b)
	return archive.Info{Size: int64(len(b)), SHA256: hex.EncodeToString(h[:])}
}

// files lists every file below dir, hidden ones included, relative and slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLocalLayoutAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "archive", "nested")
	s, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("\x89PNG fake image")
	key := archive.ImageKey("batch-7", "job-1", "png")
	if err := s.Put(t.Context(), key, bytes.NewReader(data), infoOf(data)); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "batch-7", "job-1.png")
	if got := s.Location(key); got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	got, err := os.ReadFile(want)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file at %s: %q, %v; want the image", want, got, err)
	}
	if fi, _ := os.Stat(want); fi.Mode().Perm() != 0o644 {
		t.Errorf("file mode %v, want 0644 (readable by the people browsing the archive)", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Dir(want)); fi.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", fi.Mode().Perm())
	}
	if all := files(t, dir); len(all) != 1 {
		t.Errorf("archive holds %q, want only the image (no temporary files left)", all)
	}
}

func TestLocalFailedPublishLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	s, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A non-empty directory where the file should go makes the final rename fail after
	// everything was written and checked.
	if err := os.MkdirAll(filepath.Join(dir, "b1", "x.png", "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("z"), 100<<10)
	err = s.Put(t.Context(), "b1/x.png", bytes.NewReader(data), infoOf(data))
	if err == nil {
		t.Fatal("Put over a directory succeeded")
	}
	if !strings.Contains(err.Error(), "b1/x.png") {
		t.Errorf("error %q does not name the key", err)
	}
	if all := files(t, dir); len(all) != 0 {
		t.Errorf("after a failed Put the archive holds %q, want nothing", all)
	}
	if _, err := s.Stat(t.Context(), "b1/x.png"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Stat of a key naming a directory: %v, want ErrNotFound", err)
	}
}

func TestLocalRemovesStaleTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	write := func(rel string, mtime time.Time) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	// Leftovers of crashed Puts, one old enough to be dead, one that may belong to a Put
	// still running in another process, and a user's own hidden file.
	write(".kontextq-1.tmp", old)
	write("b1/.kontextq-2.tmp", old)
	write("b2/.kontextq-3.tmp", old)
	write("b1/.kontextq-4.tmp", time.Now())
	write("b1/.notes", old)

	s, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("image")
	if err := s.Put(t.Context(), "b1/a.png", bytes.NewReader(data), infoOf(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.List(t.Context(), "b2/", func(string, archive.Info) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(files(t, dir), " ")
	want := "b1/.kontextq-4.tmp b1/.notes b1/a.png"
	if got != want {
		t.Errorf("after opening, a Put into b1 and a List of b2 the archive holds %q, want %q", got, want)
	}
}

func TestLocalStatAndDeleteOfDirectoryKey(t *testing.T) {
	s := openLocal(t)
	data := []byte("image")
	if err := s.Put(t.Context(), "b1/sub/a.png", bytes.NewReader(data), infoOf(data)); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.Stat(ctx, "b1/sub"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Stat of a directory: %v, want ErrNotFound", err)
	}
	if _, err := s.Open(ctx, "b1/sub"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Open of a directory: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "b1/sub/a.png/x"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Stat below a file: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "b1/sub"); err != nil {
		t.Errorf("Delete of a directory key: %v", err)
	}
	if _, err := s.Stat(ctx, "b1/sub/a.png"); err != nil {
		t.Errorf("Delete of the directory key removed what is in it: %v", err)
	}
}

func TestLocalPutRecreatesRemovedDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("image")
	ctx := context.Background()
	if err := s.Put(ctx, "b1/a.png", bytes.NewReader(data), infoOf(data)); err != nil {
		t.Fatal(err)
	}
	// A user clears a batch by hand while the worker runs.
	if err := os.RemoveAll(filepath.Join(dir, "b1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "b1/b.png", bytes.NewReader(data), infoOf(data)); err != nil {
		t.Fatalf("Put after the directory was removed: %v", err)
	}
}
