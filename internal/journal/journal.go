// Package journal is a durable record of what Kie was asked to generate, kept in a local file,
// for a ledger that does not survive the process (the embedded, in-memory Redis).
//
// The model is an append-only JSON Lines file. Before a generate call is sent, a "submitting"
// line is written and fsync'd; the call is not made unless that succeeds. When Kie answers with a
// task id, a "submitted" line records it; when Kie certainly created no task (it answered with an
// error), an "unsent" line clears the first. Replaying the file therefore tells, for every job,
// the task Kie holds for it and whether a call may have reached Kie without its answer being
// recorded. A process that restarts restores that into its new ledger: jobs with a task are
// polled instead of submitted again, and a job whose call may have reached Kie is failed as
// interrupted rather than paid for twice.
//
// A line cut off by a crash is the last one and was never fsync'd, so the call it announced was
// never sent: replay ignores it. The file is rewritten compactly (one or two lines per job) each
// time it is opened, and a lock file keeps two processes from sharing one journal.
package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// Operations of a journal line.
const (
	opSubmitting = "submitting"
	opSubmitted  = "submitted"
	opUnsent     = "unsent"
)

// entry is one line of the file.
type entry struct {
	Op     string `json:"op"`
	Batch  string `json:"b"`
	ID     string `json:"i"`
	TaskID string `json:"t,omitempty"`
	// N, on a submitted line written by compaction, is the job's number of paid submissions
	// including this one; on a live line it is absent and the line counts one more.
	N  int   `json:"n,omitempty"`
	At int64 `json:"at"` // Unix milliseconds
}

// Record is what the journal knows of one job.
type Record struct {
	Ref jobs.Ref
	// TaskID is Kie's task for the job's latest answered submission ("" when none was answered).
	TaskID string
	// Submissions counts generate calls Kie answered with a task: each was paid for.
	Submissions int
	// SubmittedAt is when the latest task id was recorded.
	SubmittedAt time.Time
	// InFlight: a generate call was announced after the latest answer, and neither its task id
	// nor a certain refusal was recorded. Kie may hold (and have billed) a task for it.
	InFlight bool
}

// ErrLocked is returned by Open when another process holds the journal.
var ErrLocked = errors.New("journal is in use by another process")

// Journal is an open journal file. It is safe for concurrent use.
type Journal struct {
	path string
	lock *os.File
	now  func() time.Time

	mu     sync.Mutex
	f      *os.File
	recs   map[jobs.Ref]*Record
	broken error // a failed write: the file may end in a torn line, so nothing more is written
}

// Open opens (creating it and its directory) the journal at path, replays it, and rewrites it
// compactly. Only one process may hold a journal at a time.
func Open(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	j := &Journal{path: path, lock: lock, now: time.Now, recs: map[jobs.Ref]*Record{}}
	if err := j.load(); err != nil {
		unlockFile(lock)
		return nil, err
	}
	if err := j.compact(); err != nil {
		unlockFile(lock)
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		unlockFile(lock)
		return nil, fmt.Errorf("journal: %w", err)
	}
	j.f = f
	return j, nil
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

func (j *Journal) load() error {
	data, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e entry
		err := json.Unmarshal(line, &e)
		if err == nil && (e.Batch == "" || e.ID == "") {
			err = errors.New("names no job")
		}
		if err != nil {
			if i == len(lines)-1 {
				// Cut off by a crash while it was written: it was never fsync'd, so the call
				// it announced was never sent.
				break
			}
			return fmt.Errorf("journal %s line %d is corrupt (%v); it records what Kie was paid for: repair or move it aside, knowing that jobs it names may be paid again", j.path, i+1, err)
		}
		j.apply(e)
	}
	return nil
}

// apply replays one entry.
func (j *Journal) apply(e entry) {
	r := jobs.Ref{Batch: e.Batch, ID: e.ID}
	rec := j.recs[r]
	if rec == nil {
		rec = &Record{Ref: r}
		j.recs[r] = rec
	}
	switch e.Op {
	case opSubmitting:
		rec.InFlight = true
	case opSubmitted:
		rec.InFlight = false
		rec.TaskID = e.TaskID
		rec.SubmittedAt = time.UnixMilli(e.At)
		if e.N > 0 {
			rec.Submissions = e.N
		} else {
			rec.Submissions++
		}
	case opUnsent:
		rec.InFlight = false
	}
}

// compact rewrites the file from the replayed records: a temporary file, fsync'd, renamed over
// the old one, and the directory fsync'd, so a crash leaves either file whole.
func (j *Journal) compact() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: compacting: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, rec := range j.sorted() {
		if rec.Submissions > 0 {
			writeEntry(w, entry{Op: opSubmitted, Batch: rec.Ref.Batch, ID: rec.Ref.ID, TaskID: rec.TaskID, N: rec.Submissions, At: rec.SubmittedAt.UnixMilli()})
		}
		if rec.InFlight {
			writeEntry(w, entry{Op: opSubmitting, Batch: rec.Ref.Batch, ID: rec.Ref.ID, At: j.now().UnixMilli()})
		}
	}
	err = errors.Join(w.Flush(), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(j.path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("journal: compacting %s: %w", j.path, err)
	}
	return nil
}

func writeEntry(w *bufio.Writer, e entry) {
	b, _ := json.Marshal(e) // a struct of strings and ints always marshals
	w.Write(b)
	w.WriteByte('\n')
}

func (j *Journal) sorted() []*Record {
	out := make([]*Record, 0, len(j.recs))
	for _, r := range j.recs {
		if r.Submissions > 0 || r.InFlight {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Ref.Batch != out[b].Ref.Batch {
			return out[a].Ref.Batch < out[b].Ref.Batch
		}
		return out[a].Ref.ID < out[b].Ref.ID
	})
	return out
}

// Records returns what the journal knows, one record per job that had a submission announced,
// ordered by batch and id.
func (j *Journal) Records() []Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	rs := j.sorted()
	out := make([]Record, len(rs))
	for i, r := range rs {
		out[i] = *r
	}
	return out
}

// Submitting durably records that a generate call for r is about to be sent. The call must not
// be sent unless it returns nil.
func (j *Journal) Submitting(r jobs.Ref) error {
	return j.append(entry{Op: opSubmitting, Batch: r.Batch, ID: r.ID})
}

// Submitted records the task id Kie answered for r.
func (j *Journal) Submitted(r jobs.Ref, taskID string) error {
	if taskID == "" {
		return fmt.Errorf("journal: submitted %s without a task id", r)
	}
	return j.append(entry{Op: opSubmitted, Batch: r.Batch, ID: r.ID, TaskID: taskID})
}

// Unsent records that the generate call announced for r certainly created no task.
func (j *Journal) Unsent(r jobs.Ref) error {
	return j.append(entry{Op: opUnsent, Batch: r.Batch, ID: r.ID})
}

func (j *Journal) append(e entry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return j.broken
	}
	if j.f == nil {
		return fmt.Errorf("journal %s: closed", j.path)
	}
	e.At = j.now().UnixMilli()
	b, _ := json.Marshal(e)
	b = append(b, '\n')
	if _, err := j.f.Write(b); err != nil {
		j.broken = fmt.Errorf("journal %s: write failed, no more submissions are recorded: %w", j.path, err)
		return j.broken
	}
	if err := j.f.Sync(); err != nil {
		j.broken = fmt.Errorf("journal %s: fsync failed, no more submissions are recorded: %w", j.path, err)
		return j.broken
	}
	j.apply(e)
	return nil
}

// Close closes the file and releases the lock.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	unlockFile(j.lock)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
