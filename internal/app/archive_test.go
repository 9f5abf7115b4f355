package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kontextq/kontextq/archive"
)

func TestCheckArchiveWritable(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "archive")
	store, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckArchiveWritable(store); err != nil {
		t.Fatalf("a writable archive: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("the check left %v behind", left)
	}
	// The directory going away is a write failure any user can provoke, root included.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	err = CheckArchiveWritable(store)
	if !IsConfigError(err) || !strings.Contains(err.Error(), "--archive") || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("an archive that cannot be written: %v, want a configuration error naming --archive", err)
	}
}
