package journal_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/internal/journal"
	"github.com/kontextq/kontextq/jobs"
)

var (
	a = jobs.Ref{Batch: "cats", ID: "a"}
	b = jobs.Ref{Batch: "cats", ID: "b"}
)

func open(t *testing.T, path string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// summary is a Record without its time, for comparison.
type summary struct {
	Ref         jobs.Ref
	TaskID      string
	Submissions int
	InFlight    bool
}

func summarize(rs []journal.Record) []summary {
	out := []summary{}
	for _, r := range rs {
		out = append(out, summary{r.Ref, r.TaskID, r.Submissions, r.InFlight})
	}
	return out
}

// What a restarted process learns from the journal, for the histories a job can have.
func TestReplay(t *testing.T) {
	type step func(j *journal.Journal) error
	submitting := func(r jobs.Ref) step { return func(j *journal.Journal) error { return j.Submitting(r) } }
	submitted := func(r jobs.Ref, task string) step {
		return func(j *journal.Journal) error { return j.Submitted(r, task) }
	}
	unsent := func(r jobs.Ref) step { return func(j *journal.Journal) error { return j.Unsent(r) } }

	for _, c := range []struct {
		name  string
		steps []step
		want  []summary
	}{
		{"nothing", nil, []summary{}},
		{"killed before Kie answered", []step{submitting(a)},
			[]summary{{a, "", 0, true}}},
		{"answered", []step{submitting(a), submitted(a, "t1")},
			[]summary{{a, "t1", 1, false}}},
		{"refused by Kie: nothing to restore", []step{submitting(a), unsent(a)},
			[]summary{}},
		{"refused (429), then answered", []step{submitting(a), unsent(a), submitting(a), submitted(a, "t1")},
			[]summary{{a, "t1", 1, false}}},
		{"resubmitted after a failed generation", []step{submitting(a), submitted(a, "t1"), submitting(a), submitted(a, "t2")},
			[]summary{{a, "t2", 2, false}}},
		{"killed during a resubmission", []step{submitting(a), submitted(a, "t1"), submitting(a)},
			[]summary{{a, "t1", 1, true}}},
		{"two jobs interleaved", []step{submitting(b), submitting(a), submitted(b, "tb"), submitted(a, "ta")},
			[]summary{{a, "ta", 1, false}, {b, "tb", 1, false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j", "journal.jsonl")
			j := open(t, path)
			for _, s := range c.steps {
				if err := s(j); err != nil {
					t.Fatal(err)
				}
			}
			if got := summarize(j.Records()); !reflect.DeepEqual(got, c.want) {
				t.Errorf("live records %+v, want %+v", got, c.want)
			}
			j.Close()
			// What matters: a new process reading the file, twice (the first rewrites it).
			for i := range 2 {
				j2, err := journal.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				got := summarize(j2.Records())
				j2.Close()
				if !reflect.DeepEqual(got, c.want) {
					t.Errorf("reopened (%d): records %+v, want %+v", i+1, got, c.want)
				}
			}
		})
	}
}

// The file is rewritten compactly when opened: one line per answered job.
func TestCompactsOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	j := open(t, path)
	for range 3 {
		must(t, j.Submitting(a))
		must(t, j.Unsent(a))
	}
	must(t, j.Submitting(a))
	must(t, j.Submitted(a, "t1"))
	j.Close()
	if n := lines(t, path); n != 8 {
		t.Fatalf("%d lines before compaction, want 8", n)
	}
	j2 := open(t, path)
	if n := lines(t, path); n != 1 {
		t.Errorf("%d lines after reopening, want 1", n)
	}
	if rs := j2.Records(); len(rs) != 1 || rs[0].SubmittedAt.IsZero() {
		t.Errorf("records after compaction: %+v", rs)
	}
}

// A crash while a line was being written leaves a torn last line: that call was never sent
// (its line was never fsync'd), so it is ignored, and the journal goes on working.
func TestTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	j := open(t, path)
	must(t, j.Submitting(a))
	must(t, j.Submitted(a, "t1"))
	j.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"op":"submitting","b":"cats","i":"b","a`)
	f.Close()

	j2 := open(t, path)
	must(t, j2.Submitting(b))
	must(t, j2.Submitted(b, "t2"))
	j2.Close()
	j3 := open(t, path)
	want := []summary{{a, "t1", 1, false}, {b, "t2", 1, false}}
	if got := summarize(j3.Records()); !reflect.DeepEqual(got, want) {
		t.Errorf("records %+v, want %+v", got, want)
	}
}

// A corrupt line in the middle means the journal cannot say what was paid: opening fails and
// says so, instead of guessing.
func TestCorruptLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	content := `{"op":"submitted","b":"cats","i":"a","t":"t1","at":1}` + "\n" + "garbage\n" +
		`{"op":"submitted","b":"cats","i":"b","t":"t2","at":1}` + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := journal.Open(path)
	if err == nil || !strings.Contains(err.Error(), "line 2 is corrupt") {
		t.Fatalf("Open: %v; want a corrupt line 2", err)
	}
	if got, _ := os.ReadFile(path); string(got) != content {
		t.Error("a corrupt journal was rewritten")
	}
}

// Two processes sharing a journal would each think the other's submissions unknown.
func TestOneHolderAtATime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	j := open(t, path)
	if _, err := journal.Open(path); !errors.Is(err, journal.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	j.Close()
	open(t, path)
}

func TestClosedJournalRefusesSubmissions(t *testing.T) {
	j := open(t, filepath.Join(t.TempDir(), "journal.jsonl"))
	j.Close()
	if err := j.Submitting(a); err == nil {
		t.Error("Submitting on a closed journal succeeded: the call would go out unrecorded")
	}
}

func TestFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.jsonl")
	j := open(t, path)
	must(t, j.Submitting(a))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("journal mode %v: readable by others", fi.Mode().Perm())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}
