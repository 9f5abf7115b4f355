package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/kontextq/kontextq/jobs"
)

// loadOptions say how a file is read and enqueued.
type loadOptions struct {
	Path        string
	Format      string
	Batch       string
	Defaults    jobs.Spec
	SkipInvalid bool
	Concurrency int
}

// loadReport is what a load did.
type loadReport struct {
	Lines, Valid, Invalid int
	Added, Existing       int
	RejectsPath           string
}

// badInputError lists every bad line of a file.
type badInputError struct {
	path  string
	lines []error
}

func (e *badInputError) Error() string {
	msg := fmt.Sprintf("%s: %d bad line(s); nothing was enqueued (--skip-invalid enqueues the good lines and writes the bad ones to a rejects file):", e.path, len(e.lines))
	for _, l := range e.lines {
		msg += "\n  " + l.Error()
	}
	return msg
}

func openReader(o loadOptions) (*jobs.Reader, io.Closer, error) {
	f, err := os.Open(o.Path)
	if err != nil {
		return nil, nil, err
	}
	format, err := jobs.FormatFor(o.Path, o.Format)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	abs, _ := filepath.Abs(o.Path)
	r, err := jobs.NewReader(f, o.Path, format, jobs.ReadOptions{Batch: o.Batch, Defaults: o.Defaults, BaseDir: filepath.Dir(abs)})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return r, f, nil
}

// validateFile reads the whole file once and collects every bad line, so that nothing is enqueued
// from a file with mistakes unless the user asks for it.
func validateFile(o loadOptions) (loadReport, []*jobs.LineError, error) {
	var rep loadReport
	r, c, err := openReader(o)
	if err != nil {
		return rep, nil, err
	}
	defer c.Close()
	var bad []*jobs.LineError
	for {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *jobs.LineError
		if errors.As(err, &le) {
			bad = append(bad, le)
			continue
		}
		if err != nil {
			return rep, bad, err
		}
		rep.Valid++
	}
	rep.Lines = r.Lines()
	rep.Invalid = len(bad)
	return rep, bad, nil
}

// loadFile validates then enqueues a file. Bad lines stop it (nothing enqueued) unless
// SkipInvalid, which writes them to <file>.rejects.jsonl instead.
func loadFile(ctx context.Context, enq *jobs.Enqueuer, o loadOptions, progress func(done int)) (loadReport, error) {
	rep, bad, err := validateFile(o)
	if err != nil {
		return rep, usageErr(err)
	}
	if len(bad) > 0 {
		if !o.SkipInvalid {
			errs := make([]error, len(bad))
			for i, b := range bad {
				errs[i] = b
			}
			return rep, usageErr(&badInputError{path: o.Path, lines: errs})
		}
		rep.RejectsPath = o.Path + ".rejects.jsonl"
		if err := writeRejects(rep.RejectsPath, bad); err != nil {
			return rep, err
		}
	}
	if rep.Valid == 0 {
		return rep, usageErr(fmt.Errorf("%s: no valid jobs", o.Path))
	}
	r, c, err := openReader(o)
	if err != nil {
		return rep, err
	}
	defer c.Close()

	n := max(o.Concurrency, 1)
	items := make(chan jobs.Spec, n*4)
	var added, existing, done atomic.Int64
	var firstErr error
	var once sync.Once
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for s := range items {
				out, err := enq.EnqueueValid(cctx, &s)
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					continue
				}
				if out.Added {
					added.Add(1)
				} else {
					existing.Add(1)
				}
				if d := done.Add(1); progress != nil {
					progress(int(d))
				}
			}
		})
	}
	for cctx.Err() == nil {
		it, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			continue // reported by the validation pass
		}
		select {
		case items <- it.Spec:
		case <-cctx.Done():
		}
	}
	close(items)
	wg.Wait()
	rep.Added, rep.Existing = int(added.Load()), int(existing.Load())
	if firstErr != nil {
		return rep, fmt.Errorf("enqueuing %s: %w (re-running the same command resumes; nothing is enqueued twice)", o.Path, firstErr)
	}
	return rep, ctx.Err()
}

func writeRejects(path string, bad []*jobs.LineError) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing rejects: %w", err)
	}
	enc := json.NewEncoder(f)
	for _, b := range bad {
		_ = enc.Encode(map[string]any{"line": b.Line, "error": b.Error(), "raw": b.Raw})
	}
	return f.Close()
}
