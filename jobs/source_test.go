package jobs

import (
	"context"
	"slices"
	"testing"
)

// A job loaded from a file keeps where it came from and the name its image is archived under;
// names stay unique within the batch and are fixed when the job is first loaded.
func TestLedgerKeepsSourceAndUniqueNames(t *testing.T) {
	l, _, _ := opsSetup(t)
	ctx := context.Background()
	a := &Spec{Batch: "b", ID: "ja", Prompt: "a fox", File: "/in/one.csv", Line: 2, Name: "fox"}
	b := &Spec{Batch: "b", ID: "jb", Prompt: "a fox", File: "/in/two.csv", Line: 2, Name: "fox"}
	c := &Spec{Batch: "b", ID: "jc", Prompt: "a hen", File: "/in/one.csv", Line: 3}
	if _, err := l.CreateMany(ctx, []*Spec{a, b, c}, Bulk); err != nil {
		t.Fatal(err)
	}
	want := map[string][3]any{"ja": {"/in/one.csv", 2, "fox"}, "jb": {"/in/two.csv", 2, "fox-jb"}, "jc": {"/in/one.csv", 3, "jc"}}
	for id, w := range want {
		j := mustGet(t, l, Ref{"b", id})
		if got := [3]any{j.Spec.File, j.Spec.Line, j.Spec.FileName()}; got != w {
			t.Errorf("job %s: file, line, name %v, want %v", id, got, w)
		}
	}
	// Loading again, with the lines moved and another name, changes nothing of a known job.
	a2 := *a
	a2.Line, a2.Name = 40, "other"
	if _, err := l.CreateMany(ctx, []*Spec{&a2}, Bulk); err != nil {
		t.Fatal(err)
	}
	if j := mustGet(t, l, Ref{"b", "ja"}); j.Spec.Line != 2 || j.Spec.FileName() != "fox" {
		t.Errorf("after a re-load: line %d, name %q; want 2, fox", j.Spec.Line, j.Spec.FileName())
	}
	var seen []string
	if err := l.Each(ctx, "b", func(j *Job) error { seen = append(seen, j.Spec.File); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"/in/one.csv", "/in/two.csv", "/in/one.csv"}) {
		t.Errorf("Each: files %v", seen)
	}
	// The file is not part of the stored request: the record stays small.
	raw, _ := l.rdb.HGet(ctx, l.jobKey(Ref{"b", "ja"}), fSpec).Result()
	if raw != `{"prompt":"a fox"}` {
		t.Errorf("stored spec %s", raw)
	}
}
