package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// Temporary files are hidden (List skips dot names, and so do most file browsers) and
	// carry a recognisable pattern, so that cleaning them never touches a user's own files.
	tmpPrefix = ".kontextq-"
	tmpSuffix = ".tmp"
	// staleTemp is the age past which a temporary file can only be a crash's leftover: no
	// Put of an image takes an hour.
	staleTemp = time.Hour
)

// Local is a Store in a directory of the local file system. Keys map to paths below the
// directory. Put writes a hidden temporary file beside the destination, checks it, fsyncs
// it, renames it over the final name and fsyncs the directory, so after a crash a file
// is either absent, the previous version, or complete.
type Local struct {
	root string

	// ready holds the directories this store has created (or found), made durable and
	// cleaned of stale temporary files, so each costs those system calls once per process.
	ready sync.Map
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating it when needed) the archive directory dir.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("archive: open local store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("archive: open local store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("archive: open local store: %w", err)
	}
	l := &Local{root: abs}
	// Leftovers in deeper directories are cleaned lazily, when a Put or List first visits
	// them: walking a million-file archive at every start would be slow.
	l.removeStale(abs)
	return l, nil
}

// path maps a valid key to its file.
func (l *Local) path(key string) string {
	return filepath.Join(l.root, filepath.FromSlash(key))
}

// Location returns the absolute path of key's file.
func (l *Local) Location(key string) string { return l.path(key) }

// Close does nothing: a Local holds no resources between calls.
func (l *Local) Close() error { return nil }

// Put implements Store.
func (l *Local) Put(ctx context.Context, key string, r io.Reader, want Info) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("archive put %s: %w", key, err)
		}
	}()
	if err := ValidKey(key); err != nil {
		return err
	}
	want, err = checkWant(want)
	if err != nil {
		return err
	}
	final := l.path(key)
	dir := filepath.Dir(final)
	f, err := l.createTemp(dir)
	if err != nil {
		return err
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close() // may already be closed; the file is being thrown away either way
			_ = os.Remove(tmp)
		}
	}()

	v := newVerifier(ctx, r, want)
	if _, err := io.Copy(f, v); err != nil {
		return err
	}
	if err := v.done(); err != nil {
		return err
	}
	// CreateTemp makes 0600 files; archived images are meant to be read by others.
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	renamed = true
	// Without this the rename itself may not survive a power loss. The object is already
	// visible and complete; the error tells the caller to try again, which is harmless.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// createTemp makes the temporary file in the destination directory (a rename is atomic
// only within one file system), preparing the directory first.
func (l *Local) createTemp(dir string) (*os.File, error) {
	if err := l.prepareDir(dir); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*"+tmpSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		// Someone removed the directory since this process prepared it: prepare it again.
		l.ready.Delete(dir)
		if err := l.prepareDir(dir); err != nil {
			return nil, err
		}
		f, err = os.CreateTemp(dir, tmpPrefix+"*"+tmpSuffix)
	}
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return f, nil
}

// prepareDir creates dir, makes every new directory entry on the way durable, and cleans
// stale temporary files out of it, once per directory per process.
func (l *Local) prepareDir(dir string) error {
	if _, ok := l.ready.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	for d := dir; d != l.root && strings.HasPrefix(d, l.root); d = filepath.Dir(d) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return fmt.Errorf("sync directory: %w", err)
		}
	}
	l.removeStale(dir)
	l.ready.Store(dir, struct{}{})
	return nil
}

// removeStale deletes crash leftovers in dir. It is best effort: a leftover that cannot be
// removed is only wasted space, and hidden from List.
func (l *Local) removeStale(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		l.removeIfStale(filepath.Join(dir, e.Name()), e)
	}
}

func (l *Local) removeIfStale(p string, e fs.DirEntry) {
	name := e.Name()
	if !e.Type().IsRegular() || !strings.HasPrefix(name, tmpPrefix) || !strings.HasSuffix(name, tmpSuffix) {
		return
	}
	fi, err := e.Info()
	if err != nil {
		return
	}
	if time.Since(fi.ModTime()) > staleTemp {
		_ = os.Remove(p)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// notExist also covers a key that runs through a regular file ("a.png/b"), which names no
// object either.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Stat implements Store. SHA256 is left empty: knowing it would mean reading the file.
func (l *Local) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, fmt.Errorf("archive stat %s: %w", key, err)
	}
	fi, err := os.Stat(l.path(key))
	if notExist(err) || (err == nil && !fi.Mode().IsRegular()) {
		return Info{}, fmt.Errorf("archive stat %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("archive stat %s: %w", key, err)
	}
	return l.info(key, fi), nil
}

func (l *Local) info(key string, fi fs.FileInfo) Info {
	return Info{Size: fi.Size(), ContentType: contentTypeFor(key), ModTime: fi.ModTime()}
}

// Open implements Store.
func (l *Local) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, fmt.Errorf("archive open %s: %w", key, err)
	}
	f, err := os.Open(l.path(key))
	if notExist(err) {
		return nil, fmt.Errorf("archive open %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("archive open %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("archive open %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("archive open %s: %w", key, ErrNotFound)
	}
	return f, nil
}

// Delete implements Store. Directories are left in place, even when emptied: removing one
// could race with a Put about to create a file in it.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	p := l.path(key)
	fi, err := os.Lstat(p)
	if notExist(err) || (err == nil && fi.IsDir()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !notExist(err) {
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	return nil
}

// List implements Store. It walks only the directory the prefix names, skips hidden names
// (temporary files among them) and removes stale temporary files it passes.
func (l *Local) List(ctx context.Context, prefix string, fn func(key string, info Info) error) error {
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("archive list %s: %w", prefix, err)
	}
	start := l.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = l.path(prefix[:i])
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == start && notExist(err) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == start {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(e.Name(), ".") {
			l.removeIfStale(p, e)
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			// Descend only where keys can still match the prefix.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !e.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := e.Info()
		if notExist(err) {
			return nil // deleted while listing
		}
		if err != nil {
			return err
		}
		return fn(key, l.info(key, fi))
	})
	if err != nil {
		return fmt.Errorf("archive list %s: %w", prefix, err)
	}
	return nil
}
