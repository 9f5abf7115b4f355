package jobs

import (
	"fmt"
	"testing"
)

func TestReaderCSVRecords(t *testing.T) {
	t.Parallel()
	content := "prompt,aspectRatio,promptUpsampling,safetyTolerance,uploadCn\n" +
		"\"a cat, sitting\",1:1,true,3,FALSE\n" +
		"\"line one\r\nline \"\"two\"\"\",,0,,\n" +
		"\n" +
		",,,,\n" +
		"plain,,1,0,\n"
	res := readAll(t, FormatCSV, content, ReadOptions{})
	if len(res.lineErrs) != 0 || len(res.items) != 3 {
		t.Fatalf("items %+v, errors %v, want 3 items", res.items, res.lineErrs)
	}
	want := []struct {
		line int
		spec string
	}{
		{2, deref(Spec{Prompt: "a cat, sitting", AspectRatio: "1:1", PromptUpsampling: ptr(true), SafetyTolerance: ptr(3), UploadCn: ptr(false)})},
		{3, deref(Spec{Prompt: "line one\nline \"two\"", PromptUpsampling: ptr(false)})},
		{7, deref(Spec{Prompt: "plain", PromptUpsampling: ptr(true), SafetyTolerance: ptr(0)})},
	}
	for i, w := range want {
		it := res.items[i]
		it.Spec.ID = ""
		if it.Line != w.line || deref(it.Spec) != w.spec {
			t.Errorf("item %d: line %d %s\nwant line %d %s", i, it.Line, deref(it.Spec), w.line, w.spec)
		}
	}
	if res.lines != 7 {
		t.Errorf("Lines() = %d, want 7", res.lines)
	}
}

func TestReaderCSVHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		want    []Problem
		line    int
	}{
		{"unknown column", "prompt,aspect_ratio\na,1:1\n",
			[]Problem{{"aspect_ratio", `unknown column (did you mean "aspectRatio"?)`}}, 1},
		{"wrong case", "Prompt,model\na,flux-kontext-max\n",
			[]Problem{{"Prompt", `unknown column (did you mean "prompt"?)`}, {"prompt", "the header has no prompt column"}}, 1},
		{"duplicate column", "prompt,model,model\na,b,c\n", []Problem{{"model", "column appears twice"}}, 1},
		{"no prompt column", "model\nflux-kontext-max\n", []Problem{{"prompt", "the header has no prompt column"}}, 1},
		{"unnamed column", "prompt,,model\na,b,c\n", []Problem{{"", "header: column 2 has no name"}}, 1},
		{"batch column", "prompt,batch\na,b\n", []Problem{{"batch", "is set for the whole file, not per line"}}, 1},
		{"header after blank lines", "\n\nprompt,colour\na,red\n", []Problem{{"colour", "unknown column"}}, 3},
		{"every problem at once", "promt,aspect ratio,seed,seed\n",
			[]Problem{{"promt", `unknown column (did you mean "prompt"?)`}, {"aspect ratio", `unknown column (did you mean "aspectRatio"?)`},
				{"seed", "unknown column"}, {"seed", "unknown column"}, {"prompt", "the header has no prompt column"}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := readAll(t, FormatCSV, tt.content, ReadOptions{})
			if len(res.items) != 0 || len(res.lineErrs) != 1 {
				t.Fatalf("items %+v, errors %v, want one error and no jobs: rows cannot be read against a bad header", res.items, res.lineErrs)
			}
			le := res.lineErrs[0]
			got := le.Problems
			if len(got) == 0 {
				got = []Problem{{le.Field, le.Msg}}
			}
			if le.Line != tt.line || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("line %d: %q\nwant line %d: %q", le.Line, got, tt.line, tt.want)
			}
		})
	}

	// Spaces around names are not a different name.
	res := readAll(t, FormatCSV, " prompt , model \na,flux-kontext-max\n", ReadOptions{})
	if len(res.items) != 1 || res.items[0].Spec.Model != "flux-kontext-max" {
		t.Errorf("items %+v, errors %v", res.items, res.lineErrs)
	}
}

func TestReaderCSVBadRows(t *testing.T) {
	t.Parallel()
	const header = "prompt,model,uploadCn,safetyTolerance\n"
	tests := []struct {
		name string
		rows string // between a good first and a good last row
		want []wantErr
	}{
		{"bad boolean", "a,,yes,\n", []wantErr{{3, "uploadCn", `"yes" is not a boolean (true, false, 1 or 0)`}}},
		{"bad integer", "a,,,high\n", []wantErr{{3, "safetyTolerance", `"high" is not a whole number`}}},
		{"integer out of range", "a,,,9\n", []wantErr{{3, "safetyTolerance", "9 is out of range 0..6"}}},
		{"bad model", "a,flux,,\n", []wantErr{{3, "model", `"flux" is not one of`}}},
		{"too few fields", "a,flux-kontext-max\n", []wantErr{{3, "", "has 2 fields; the header has 4"}}},
		{"too many fields", "a,,,,\n", []wantErr{{3, "", "has 5 fields; the header has 4"}}},
		{"empty prompt", ",flux-kontext-max,,\n", []wantErr{{3, "prompt", "is required"}}},
		{"bare quote", "a \"b\" c,,,\n", []wantErr{{3, "", `a " inside a field that is not quoted`}}},
		{"text after a quoted field", "\"a\"b,,,\n", []wantErr{{3, "", "a quoted field is followed by more text"}}},
		{"invalid UTF-8 cell", "a,flux-kontext-m\xe4x,,\n", []wantErr{{3, "model", "model: is not valid UTF-8"}}},
		// A record spanning lines is reported at the line it starts on.
		{"multi-line record", "\"first\nsecond\nthird\",flux,,\n", []wantErr{{3, "model", `"flux" is not one of`}}},
		{"several bad rows", "a,,maybe,\nb,,,x\n",
			[]wantErr{{3, "uploadCn", "is not a boolean"}, {4, "safetyTolerance", "is not a whole number"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := readAll(t, FormatCSV, header+"first,,,\n"+tt.rows+"last,,,\n", ReadOptions{})
			checkLineErrs(t, res.lineErrs, tt.want)
			if fmt.Sprint(prompts(res.items)) != "[first last]" {
				t.Errorf("items %q, want [first last]: reading goes on after a bad row", prompts(res.items))
			}
		})
	}
}

func TestReaderCSVUnclosedQuote(t *testing.T) {
	t.Parallel()
	res := readAll(t, FormatCSV, "prompt\nok\n\"never closed\nmore\n", ReadOptions{})
	checkLineErrs(t, res.lineErrs, []wantErr{{3, "", "a quoted field is not closed by the end of the file"}})
	if fmt.Sprint(prompts(res.items)) != "[ok]" {
		t.Errorf("items %q, want [ok]", prompts(res.items))
	}

	// Within the size limit the open quote swallows what follows; past it, the record is
	// reported and reading resumes.
	content := "prompt\n\"open\n" + "xxxxxx\n" + "y\n" + "after\n"
	res = readAll(t, FormatCSV, content, ReadOptions{MaxLineBytes: 10})
	checkLineErrs(t, res.lineErrs, []wantErr{{2, "", "record is longer than 10 bytes: is a quoted field left open?"}})
	if fmt.Sprint(prompts(res.items)) != "[y after]" {
		t.Errorf("items %q, want [y after]", prompts(res.items))
	}
}
