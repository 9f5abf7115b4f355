package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// Every image leads back to its prompt: run with --name names the archived files after their
// line and prompt, the failure list names the line and prompt of each failed job, and export
// carries file, line, the request and the outcome of every job. Loading the file again, edited,
// renames nothing.
func TestRunTracesImagesToTheirLines(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{ContentPolicyWords: []string{"forbidden"}})
	dir := t.TempDir()
	envv := workerEnv(env, sim, dir)
	file := writeFile(t, filepath.Join(dir, "owls.csv"), []byte("prompt,aspectRatio\n"+
		"A snowy owl — at dusk!,16:9\n"+
		"an owl over a forbidden barn,1:1\n"+
		"a barn owl,\n"+
		"a barn owl,\n"))

	code, out := kq(t, dir, envv, "load", file, "--name", "{line:04}-{title}")
	if code != exitUsage || !strings.Contains(out, "--name") || !strings.Contains(out, "{title}: unknown placeholder") ||
		!strings.Contains(out, "{line:0N}") {
		t.Fatalf("load with an unknown placeholder: exit %d, want %d and an error naming --name, the placeholder and the accepted ones\n%s", code, exitUsage, out)
	}

	code, out = kq(t, dir, envv, "run", file, "--name", "{line:04}-{slug}")
	if code != exitFailed {
		t.Fatalf("run: exit %d, want %d (one job rejected)\n%s", code, exitFailed, out)
	}
	if !strings.Contains(out, `failed owls.csv:3 "an owl over a forbidden barn" (job `) || !strings.Contains(out, ": rejected: ") {
		t.Errorf("the failure list does not name the line and prompt:\n%s", out)
	}
	var names []string
	ents, _ := os.ReadDir(filepath.Join(dir, "archive", "owls"))
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	// Two identical lines are two images with two names.
	if len(names) != 3 || names[0] != "0002-a-snowy-owl-at-dusk.jpeg" || names[1] != "0004-a-barn-owl.jpeg" || names[2] != "0005-a-barn-owl.jpeg" {
		t.Errorf("archived files %v, want 0002-a-snowy-owl-at-dusk.jpeg, 0004-a-barn-owl.jpeg, 0005-a-barn-owl.jpeg", names)
	}

	// verify finds the named images where they are.
	if code, out := kq(t, dir, envv, "verify", "owls"); code != 0 || !strings.Contains(out, "3 images verified, 3 intact") {
		t.Errorf("verify of named images: exit %d\n%s", code, out)
	}

	code, out = kq(t, dir, envv, "export", "owls", "--format", "csv")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 5 {
		t.Fatalf("export: exit %d, %v\n%s", code, err, out)
	}
	col := map[string]int{}
	for i, c := range recs[0] {
		col[c] = i
	}
	for _, c := range []string{"file", "line", "prompt", "aspectRatio", "state", "reason", "taskId", "archive", "sha256", "bytes", "credits", "submittedAt", "archivedAt"} {
		if _, ok := col[c]; !ok {
			t.Errorf("export has no %s column: %v", c, recs[0])
		}
	}
	byLine := map[string][]string{}
	for _, r := range recs[1:] {
		byLine[r[col["line"]]] = r
	}
	if r := byLine["2"]; r == nil || r[col["file"]] != file || r[col["prompt"]] != "A snowy owl — at dusk!" || r[col["aspectRatio"]] != "16:9" ||
		r[col["state"]] != "archived" || filepath.Base(r[col["archive"]]) != "0002-a-snowy-owl-at-dusk.jpeg" || r[col["bytes"]] == "" || r[col["taskId"]] == "" {
		t.Errorf("export row of line 2: %v", r)
	}
	if r := byLine["3"]; r == nil || r[col["state"]] != "failed" || r[col["reason"]] != "rejected" || r[col["archive"]] != "" {
		t.Errorf("export row of line 3: %v", r)
	}

	// The results written back beside the prompts, as a copy of the input CSV.
	results := filepath.Join(dir, "owls-results.csv")
	if code, out := kq(t, dir, envv, "export", "owls", "--into", file, "--out", results); code != 0 {
		t.Fatalf("export --into: exit %d\n%s", code, out)
	}
	rb, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	back, err := csv.NewReader(strings.NewReader(string(rb))).ReadAll()
	if err != nil || len(back) != 5 {
		t.Fatalf("written back: %v\n%s", err, rb)
	}
	if h := strings.Join(back[0], ","); !strings.HasPrefix(h, "prompt,aspectRatio,kontextq_id,kontextq_state,kontextq_reason") {
		t.Errorf("written-back header %q, want the input's columns then kontextq's", h)
	}
	if r := back[1]; r[0] != "A snowy owl — at dusk!" || r[3] != "archived" || filepath.Base(r[7]) != "0002-a-snowy-owl-at-dusk.jpeg" {
		t.Errorf("written-back row of line 2: %v", r)
	}
	if r := back[2]; r[0] != "an owl over a forbidden barn" || r[3] != "failed" || r[4] != "rejected" {
		t.Errorf("written-back row of line 3: %v", r)
	}
	if code, out := kq(t, dir, envv, "export", "owls", "--into", filepath.Join(dir, "other.csv")); code != exitUsage || !strings.Contains(out, "--into") {
		t.Errorf("export --into a file the batch was not loaded from: exit %d\n%s", code, out)
	}

	// The file edited (a line inserted at the top) and loaded again with another template: no job
	// is added or renamed, and the manifest still points at the same files.
	if err := os.WriteFile(file, []byte("prompt,aspectRatio\na new heron,\nA snowy owl — at dusk!,16:9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := kq(t, dir, envv, "load", file, "--name", "{slug}"); code != 0 {
		t.Fatalf("load again: exit %d\n%s", code, out)
	}
	code, out = kq(t, dir, envv, "export", "owls")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	var archives []string
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var r manifestRow
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("row %s: %v", l, err)
		}
		if r.Prompt == "A snowy owl — at dusk!" && (r.Line == nil || *r.Line != 2) {
			t.Errorf("after a re-load the owl's line is %v, want 2 (where it was loaded from)", r.Line)
		}
		if r.Archive != "" {
			archives = append(archives, filepath.Base(r.Archive))
		}
	}
	slices.Sort(archives)
	if !slices.Equal(archives, names) {
		t.Errorf("archives after a re-load %v, want %v", archives, names)
	}
}
