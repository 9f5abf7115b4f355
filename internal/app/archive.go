package app

import (
	"context"
	"fmt"
	"os"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
)

// OpenStore opens the archive cfg names.
func OpenStore(ctx context.Context, cfg config.Config) (archive.Store, error) {
	s, err := archive.Open(ctx, cfg.Archive)
	if err != nil {
		return nil, configErr(fmt.Errorf("--archive (KONTEXTQ_ARCHIVE): %w", err))
	}
	return s, nil
}

// CheckArchiveWritable fails fast when a local archive directory cannot be written. Without the
// check a worker would submit and pay for every job, then retry each one's archiving until its
// result expired. A remote store is left to its first write.
func CheckArchiveWritable(store archive.Store) error {
	l, ok := store.(*archive.Local)
	if !ok {
		return nil
	}
	dir := l.Location("")
	// A hidden name: the archive's listings skip it, and a leftover is never taken for an image.
	f, err := os.CreateTemp(dir, ".kontextq-write-check-*")
	if err != nil {
		return configErr(fmt.Errorf("--archive (KONTEXTQ_ARCHIVE): cannot write to %s: %w", dir, err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}
