package archivetest

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/kontextq/kontextq/archive"
)

// Flaky is a Store that can be switched off: while down, every call but Location and Close
// fails with the error given to SetDown, as a store whose disk or bucket is gone would.
// Use it by pointer: &archivetest.Flaky{Store: s}.
type Flaky struct {
	archive.Store

	mu   sync.Mutex
	down error
}

// SetDown makes every call fail with err (wrapped, so errors.Is finds it); nil brings the
// store back.
func (f *Flaky) SetDown(err error) {
	f.mu.Lock()
	f.down = err
	f.mu.Unlock()
}

func (f *Flaky) fail(op, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down == nil {
		return nil
	}
	return fmt.Errorf("archive %s %s: %w", op, key, f.down)
}

// Put implements archive.Store.
func (f *Flaky) Put(ctx context.Context, key string, r io.Reader, want archive.Info) error {
	if err := f.fail("put", key); err != nil {
		return err
	}
	return f.Store.Put(ctx, key, r, want)
}

// Open implements archive.Store.
func (f *Flaky) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := f.fail("open", key); err != nil {
		return nil, err
	}
	return f.Store.Open(ctx, key)
}

// Stat implements archive.Store.
func (f *Flaky) Stat(ctx context.Context, key string) (archive.Info, error) {
	if err := f.fail("stat", key); err != nil {
		return archive.Info{}, err
	}
	return f.Store.Stat(ctx, key)
}

// Delete implements archive.Store.
func (f *Flaky) Delete(ctx context.Context, key string) error {
	if err := f.fail("delete", key); err != nil {
		return err
	}
	return f.Store.Delete(ctx, key)
}

// List implements archive.Store.
func (f *Flaky) List(ctx context.Context, prefix string, fn func(key string, info archive.Info) error) error {
	if err := f.fail("list", prefix); err != nil {
		return err
	}
	return f.Store.List(ctx, prefix, fn)
}
