package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/kontextq/kontextq/internal/pool"
	"github.com/kontextq/kontextq/jobs"
)

// The loader reads a job file twice, streaming both times so that its memory does not grow with
// the file: the first pass validates every line (nothing is enqueued from a file with mistakes
// unless the user asks for it), the second enqueues; --check-inputs adds a pass between them
// (inputs.go), and --skip-invalid one that writes the rejects. Enqueuing goes in chunks: one pipelined
// round trip records a chunk's jobs in the ledger and puts them in line for submission.
// Job ids are derived from the file's content, so loading the same file again adds nothing and a
// file that grew adds only its new lines.

// loadChunk is how many jobs one ledger round trip records.
const loadChunk = 64

// loadOptions say how a file is read and enqueued.
type loadOptions struct {
	Path   string
	Format string
	Batch  string
	// NameTemplate is the --name template of archived file names ("" the default).
	NameTemplate string
	Defaults     jobs.Spec
	SkipInvalid  bool
	Concurrency  int
	// Name is how messages name the input ("stdin" for -); empty means Path.
	Name string
	// Stdin says the jobs came on standard input (Path is then the spooled copy; see stdin.go).
	Stdin bool
	// PriorityName is the --priority class ("" bulk).
	PriorityName string
	// CheckInputs checks every inputImage URL before anything is enqueued (see inputs.go).
	CheckInputs  bool
	InputTimeout time.Duration // for one URL's check; default jobs.InputChecker's
}

// name is what messages call the input.
// priority is the class the jobs wait in (--priority; bulk by default).
func (o loadOptions) priority() (jobs.Priority, error) {
	p, err := jobs.ParsePriority(o.PriorityName, jobs.Bulk)
	if err != nil {
		return "", fmt.Errorf("--%w", err)
	}
	return p, nil
}

func (o loadOptions) name() string {
	if o.Name != "" {
		return o.Name
	}
	return o.Path
}

// rejectsPath is where --skip-invalid writes the bad lines: beside the file, or for stdin
// <batch>.rejects.jsonl in the current directory.
func (o loadOptions) rejectsPath() string {
	if o.Stdin {
		return o.Batch + ".rejects.jsonl"
	}
	return o.Path + ".rejects.jsonl"
}

// loadReport is what a load did.
type loadReport struct {
	Lines, Valid, Invalid int
	Added, Existing       int
	RejectsPath           string
	// inputFails are the lines whose inputImage failed --check-inputs, in line order: not
	// enqueued, and written to the rejects file with the lines the reader refused.
	inputFails []*jobs.LineError
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
	if o.Stdin && o.Format == "" {
		format, err = jobs.FormatJSONL, nil
	}
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
	base := filepath.Dir(abs)
	if o.Stdin {
		base = "" // relative inputImage paths on stdin are relative to the current directory
	}
	r, err := jobs.NewReader(f, o.name(), format, jobs.ReadOptions{Batch: o.Batch, Defaults: o.Defaults, BaseDir: base})
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

// validateFile is the first pass: it counts the good lines and the bad ones and, with
// CheckInputs, checks every inputImage URL. Without SkipInvalid each bad line is printed to
// errOut and the result is a usage error; with it, the bad lines are kept for the rejects file,
// which writeRejects writes once the rest of the command is known to work: nothing is created
// on disk for a load that goes no further.
func validateFile(ctx context.Context, o loadOptions, errOut io.Writer) (loadReport, error) {
	bad := func(le *jobs.LineError) error {
		if !o.SkipInvalid {
			fmt.Fprintln(errOut, le.Error())
		}
		return nil
	}
	rep, err := scanFile(o, nil, bad)
	if err != nil {
		return rep, usageErr(err)
	}
	if o.CheckInputs {
		fails, err := checkInputs(ctx, o, rep.Valid, errOut)
		if err != nil {
			return rep, err
		}
		for _, le := range fails {
			if !o.SkipInvalid {
				fmt.Fprintln(errOut, le.Error())
			}
		}
		rep.inputFails = fails
		rep.Valid -= len(fails)
		rep.Invalid += len(fails)
	}
	if rep.Invalid > 0 && !o.SkipInvalid {
		return rep, usageErr(&badInputError{path: o.name(), n: rep.Invalid})
	}
	if rep.Invalid > 0 {
		rep.RejectsPath = o.rejectsPath()
	}
	if rep.Valid == 0 {
		return rep, usageErr(fmt.Errorf("%s: no valid jobs", o.name()))
	}
	return rep, nil
}

// writeRejects writes the bad lines of a file validateFile reported on (with --skip-invalid)
// to rep.RejectsPath, in line order: the lines the reader refused, read again, and those whose
// input failed its check.
func writeRejects(o loadOptions, rep loadReport) error {
	if rep.RejectsPath == "" {
		return nil
	}
	rejects, err := createRejects(rep.RejectsPath)
	if err != nil {
		return usageErr(err)
	}
	fails := rep.inputFails
	addFailsBefore := func(line int) error {
		for len(fails) > 0 && fails[0].Line < line {
			if err := rejects.add(fails[0]); err != nil {
				return err
			}
			fails = fails[1:]
		}
		return nil
	}
	if rep.Invalid > len(rep.inputFails) {
		_, err = scanFile(o, nil, func(le *jobs.LineError) error {
			if err := addFailsBefore(le.Line); err != nil {
				return err
			}
			return rejects.add(le)
		})
	}
	if err == nil {
		err = addFailsBefore(math.MaxInt)
	}
	if cerr := rejects.close(); err == nil {
		err = cerr
	}
	return err
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

	name := (*jobs.NameTemplate)(nil)
	if o.NameTemplate != "" {
		if name, err = jobs.ParseNameTemplate(o.NameTemplate); err != nil {
			return rep, usageErr(fmt.Errorf("--name %w", err))
		}
	}
	file := "stdin" // a job file is recorded by its absolute path
	if !o.Stdin {
		if file, err = filepath.Abs(o.Path); err != nil {
			return rep, err
		}
	}
	var added, existing, done atomic.Int64
	skip := make(map[int]bool, len(rep.inputFails))
	for _, le := range rep.inputFails {
		skip[le.Line] = true
	}
	err = pool.Each(ctx, o.Concurrency, readChunks(r, skip, file, name), func(ctx context.Context, chunk []*jobs.Spec) error {
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
			"the same command again resumes (nothing is enqueued twice)", done.Load(), rep.Valid, o.name())}
	}
	if err != nil {
		return rep, fmt.Errorf("enqueuing %s: %w (the same command again resumes; nothing is enqueued twice)", o.name(), err)
	}
	return rep, nil
}

// readChunks yields the good lines of a file loadChunk at a time, less the lines in skip (whose
// input failed its check), each job knowing its source (file) and its name; the bad lines were
// reported by the validation pass.
func readChunks(r *jobs.Reader, skip map[int]bool, file string, name *jobs.NameTemplate) iter.Seq[[]*jobs.Spec] {
	return func(yield func([]*jobs.Spec) bool) {
		chunk := make([]*jobs.Spec, 0, loadChunk)
		for {
			it, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil || skip[it.Line] {
				continue
			}
			it.Spec.File, it.Spec.Line = file, it.Line
			it.Spec.Name = name.Name(&it.Spec)
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

// enqueueChunk records a chunk of jobs in the ledger in one round trip. The ledger puts each new
// job in line for submission, and each known queued job whose place in line a crash may have lost.
func enqueueChunk(ctx context.Context, enq *jobs.Enqueuer, chunk []*jobs.Spec) (added, existing int, err error) {
	res, err := enq.Ledger().CreateMany(ctx, chunk, enq.Priority())
	if err != nil {
		return 0, 0, err
	}
	for _, cr := range res {
		if cr.Existing == "" {
			added++
		} else {
			existing++
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
