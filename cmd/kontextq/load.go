package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/kontextq/kontextq/internal/pool"
	"github.com/kontextq/kontextq/jobs"
)

// The loader reads a job file twice, streaming both times so that its memory does not grow with
// the file: the first pass validates every line (nothing is enqueued from a file with mistakes
// unless the user asks for it), the second enqueues. Enqueuing goes in chunks: one pipelined
// round trip records a chunk's jobs in the ledger, then each new job gets its asynq submit task.
// Job ids are derived from the file's content, so loading the same file again adds nothing and a
// file that grew adds only its new lines.

// loadChunk is how many jobs one ledger round trip records.
const loadChunk = 64

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

// badInputError says that a file has bad lines; the lines themselves were printed as they were
// found, so that a file of a million bad lines does not have to be held in memory.
type badInputError struct {
	path string
	n    int
}

func (e *badInputError) Error() string {
	return fmt.Sprintf("%s: %d bad line(s), listed above; nothing was enqueued "+
		"(--skip-invalid enqueues the good lines and writes the bad ones to a rejects file)", e.path, e.n)
}

func openReader(o loadOptions) (*jobs.Reader, io.Closer, error) {
	format, err := jobs.FormatFor(o.Path, o.Format)
	if err != nil {
		if o.Format != "" {
			return nil, nil, fmt.Errorf("--format %q: want jsonl, csv or text", o.Format)
		}
		return nil, nil, fmt.Errorf("%s: cannot tell the format from the name (want .jsonl, .ndjson, .json, .csv or .txt): give --format jsonl, csv or text", o.Path)
	}
	f, err := os.Open(o.Path)
	if err != nil {
		return nil, nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is a directory; give a job file (JSONL, CSV or text, one job a line)", o.Path)
	}
	abs, _ := filepath.Abs(o.Path)
	r, err := jobs.NewReader(f, o.Path, format, jobs.ReadOptions{Batch: o.Batch, Defaults: o.Defaults, BaseDir: filepath.Dir(abs)})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return r, f, nil
}

// scanFile reads the whole file once, calling item for every good line and bad for every bad
// one. Errors from the callbacks stop it.
func scanFile(o loadOptions, item func(jobs.Item) error, bad func(*jobs.LineError) error) (loadReport, error) {
	var rep loadReport
	r, c, err := openReader(o)
	if err != nil {
		return rep, err
	}
	defer c.Close()
	for {
		it, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *jobs.LineError
		if errors.As(err, &le) {
			rep.Invalid++
			if err := bad(le); err != nil {
				return rep, err
			}
			continue
		}
		if err != nil {
			return rep, err
		}
		rep.Valid++
		if item != nil {
			if err := item(it); err != nil {
				return rep, err
			}
		}
	}
	rep.Lines = r.Lines()
	return rep, nil
}

// validateFile is the first pass: it counts the good lines and deals with the bad ones. Without
// SkipInvalid each bad line is printed to errOut and the result is a usage error; with it, the
// bad lines go to <file>.rejects.jsonl.
func validateFile(o loadOptions, errOut io.Writer) (loadReport, error) {
	var rejects *rejectsFile
	bad := func(le *jobs.LineError) error {
		if !o.SkipInvalid {
			fmt.Fprintln(errOut, le.Error())
			return nil
		}
		if rejects == nil {
			var err error
			if rejects, err = createRejects(o.Path + ".rejects.jsonl"); err != nil {
				return err
			}
		}
		return rejects.add(le)
	}
	rep, err := scanFile(o, nil, bad)
	if rejects != nil {
		rep.RejectsPath = rejects.path
		if cerr := rejects.close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return rep, usageErr(err)
	}
	if rep.Invalid > 0 && !o.SkipInvalid {
		return rep, usageErr(&badInputError{path: o.Path, n: rep.Invalid})
	}
	if rep.Valid == 0 {
		return rep, usageErr(fmt.Errorf("%s: no valid jobs", o.Path))
	}
	return rep, nil
}

// enqueueFile is the second pass: it enqueues the good lines of a file validateFile reported on.
// progress, when set, is called with the number of jobs enqueued (or found already there) so far,
// from several goroutines.
func enqueueFile(ctx context.Context, enq *jobs.Enqueuer, o loadOptions, rep loadReport, progress func(done int)) (loadReport, error) {
	r, c, err := openReader(o)
	if err != nil {
		return rep, err
	}
	defer c.Close()

	var added, existing, done atomic.Int64
	err = pool.Each(ctx, o.Concurrency, readChunks(r), func(ctx context.Context, chunk []*jobs.Spec) error {
		a, e, err := enqueueChunk(ctx, enq, chunk)
		added.Add(int64(a))
		existing.Add(int64(e))
		if err != nil {
			return err
		}
		if d := done.Add(int64(len(chunk))); progress != nil {
			progress(int(d))
		}
		return nil
	})
	rep.Added, rep.Existing = int(added.Load()), int(existing.Load())
	if ctx.Err() != nil {
		return rep, &exitError{code: exitFailed, err: fmt.Errorf("interrupted after %d of %d jobs of %s; "+
			"the same command again resumes (nothing is enqueued twice)", done.Load(), rep.Valid, o.Path)}
	}
	if err != nil {
		return rep, fmt.Errorf("enqueuing %s: %w (the same command again resumes; nothing is enqueued twice)", o.Path, err)
	}
	return rep, nil
}

// readChunks yields the good lines of a file loadChunk at a time; the bad ones were reported by
// the validation pass.
func readChunks(r *jobs.Reader) iter.Seq[[]*jobs.Spec] {
	return func(yield func([]*jobs.Spec) bool) {
		chunk := make([]*jobs.Spec, 0, loadChunk)
		for {
			it, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				continue
			}
			chunk = append(chunk, &it.Spec)
			if len(chunk) == loadChunk {
				if !yield(chunk) {
					return
				}
				chunk = make([]*jobs.Spec, 0, loadChunk)
			}
		}
		if len(chunk) > 0 {
			yield(chunk)
		}
	}
}

// enqueueChunk records a chunk of jobs in the ledger in one round trip, then queues the submit
// task of each job that is queued: the new ones, and known ones whose task a crash may have lost
// (the task id makes that a no-op when the task exists).
func enqueueChunk(ctx context.Context, enq *jobs.Enqueuer, chunk []*jobs.Spec) (added, existing int, err error) {
	res, err := enq.Ledger().CreateMany(ctx, chunk)
	if err != nil {
		return 0, 0, err
	}
	for i, cr := range res {
		if cr.Existing == "" {
			added++
		} else {
			existing++
		}
		if cr.Existing != "" && cr.Existing != jobs.Queued {
			continue
		}
		if err := enq.QueueSubmit(ctx, jobs.Ref{Batch: chunk[i].Batch, ID: chunk[i].ID}, cr.Submissions); err != nil {
			return added, existing, err
		}
	}
	return added, existing, nil
}

// rejectsFile collects the bad lines of a file loaded with --skip-invalid, one JSON object per
// line: the line number, the error and the start of the line.
type rejectsFile struct {
	path string
	f    *os.File
	enc  *json.Encoder
}

func createRejects(path string) (*rejectsFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("writing rejects: %w", err)
	}
	return &rejectsFile{path: path, f: f, enc: json.NewEncoder(f)}, nil
}

func (r *rejectsFile) add(le *jobs.LineError) error {
	if err := r.enc.Encode(map[string]any{"line": le.Line, "field": le.Field, "error": le.Error(), "raw": le.Raw}); err != nil {
		return fmt.Errorf("writing rejects: %w", err)
	}
	return nil
}

func (r *rejectsFile) close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("writing rejects: %w", err)
	}
	return nil
}
