package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"unicode/utf8"
)

// readResult is everything a Reader returned for one file.
type readResult struct {
	items    []Item
	lineErrs []*LineError
	other    []error // anything that is neither an item, a *LineError nor io.EOF
	lines    int
}

func readAll(t testing.TB, f Format, content string, o ReadOptions) readResult {
	t.Helper()
	name := map[Format]string{FormatJSONL: "prompts.jsonl", FormatCSV: "prompts.csv", FormatText: "prompts.txt"}[f]
	r, err := NewReader(strings.NewReader(content), name, f, o)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	return drain(t, r, strings.Count(content, "\n")+3)
}

// drain calls Next until io.EOF, failing if it does not end within limit calls.
func drain(t testing.TB, r *Reader, limit int) readResult {
	t.Helper()
	var res readResult
	for range limit {
		it, err := r.Next()
		var le *LineError
		switch {
		case err == nil:
			res.items = append(res.items, it)
		case err == io.EOF:
			res.lines = r.Lines()
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("Next after io.EOF = %v, want io.EOF again", err)
			}
			return res
		case errors.As(err, &le):
			res.lineErrs = append(res.lineErrs, le)
		default:
			res.other = append(res.other, err)
		}
	}
	t.Fatalf("Next did not reach io.EOF within %d calls", limit)
	return res
}

// wantErr describes an expected *LineError: its line, field, and a part of its message.
type wantErr struct {
	line  int
	field string
	msg   string
}

func checkLineErrs(t *testing.T, got []*LineError, want []wantErr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d line errors %v, want %d %v", len(got), got, len(want), want)
	}
	for i, w := range want {
		g := got[i]
		if g.Line != w.line || g.Field != w.field || !strings.Contains(g.Error(), w.msg) {
			t.Errorf("error %d = %q (line %d, field %q), want line %d, field %q, containing %q",
				i, g.Error(), g.Line, g.Field, w.line, w.field, w.msg)
		}
	}
}

func prompts(items []Item) []string {
	var ps []string
	for _, it := range items {
		ps = append(ps, it.Spec.Prompt)
	}
	return ps
}

func ids(items []Item) []string {
	var s []string
	for _, it := range items {
		s = append(s, it.Spec.ID)
	}
	return s
}

func TestFormatFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path, explicit string
		want           Format
		wantErr        string
	}{
		{"a.jsonl", "", FormatJSONL, ""},
		{"dir/a.NDJSON", "", FormatJSONL, ""},
		{"a.json", "", FormatJSONL, ""},
		{"a.csv", "", FormatCSV, ""},
		{"a.txt", "", FormatText, ""},
		{"a.text", "", FormatText, ""},
		{"a.csv", "text", FormatText, ""},
		{"-", "jsonl", FormatJSONL, ""},
		{"a.txt", "CSV", FormatCSV, ""},
		{"a.dat", "", "", `cannot tell the format of "a.dat"`},
		{"-", "", "", `cannot tell the format of "-"`},
		{"a.txt", "xml", "", `format "xml": want jsonl, csv or text`},
	}
	for _, tt := range tests {
		got, err := FormatFor(tt.path, tt.explicit)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("FormatFor(%q, %q) error = %v, want one containing %q", tt.path, tt.explicit, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FormatFor(%q, %q) = %q, %v, want %q", tt.path, tt.explicit, got, err, tt.want)
		}
	}
}

func TestNewReaderChecksOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    Format
		o    ReadOptions
		want string
	}{
		{"unknown format", "xml", ReadOptions{}, `format "xml"`},
		{"bad batch", FormatText, ReadOptions{Batch: "../up"}, "batch:"},
		{"bad default", FormatText, ReadOptions{Defaults: Spec{AspectRatio: "2:1"}}, `aspectRatio: "2:1" is not one of`},
		{"missing default image", FormatText, ReadOptions{Defaults: Spec{InputImage: filepath.Join(t.TempDir(), "no.png")}}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(strings.NewReader("p\n"), "f.txt", tt.f, tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewReader() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLineErrorMessage(t *testing.T) {
	t.Parallel()
	one := &LineError{File: "prompts.jsonl", Line: 12, Field: "aspectRatio", Msg: `"2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16`}
	if got, want := one.Error(), `prompts.jsonl:12: aspectRatio: "2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16`; got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}
	whole := &LineError{File: "p.txt", Line: 3, Msg: "line is 5 bytes; at most 4 bytes"}
	if got, want := whole.Error(), "p.txt:3: line is 5 bytes; at most 4 bytes"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}

	res := readAll(t, FormatJSONL, `{"prompt":"","model":"m","note":"x"}`+"\n", ReadOptions{})
	want := `prompts.jsonl:1: note: unknown field; prompt: is required; model: "m" is not one of flux-kontext-pro, flux-kontext-max`
	if len(res.lineErrs) != 1 || res.lineErrs[0].Error() != want {
		t.Fatalf("errors = %v\nwant %s", res.lineErrs, want)
	}
	if le := res.lineErrs[0]; le.Field != "note" || len(le.Problems) != 3 {
		t.Errorf("Field = %q with %d problems, want the first problem's field and all 3", le.Field, len(le.Problems))
	}
}

func TestReaderRawIsCut(t *testing.T) {
	t.Parallel()
	long := `{"prompt":"` + strings.Repeat("é", 300) + `","model":"x"}`
	res := readAll(t, FormatJSONL, long+"\n", ReadOptions{})
	if len(res.lineErrs) != 1 {
		t.Fatalf("errors = %v, want 1", res.lineErrs)
	}
	raw := res.lineErrs[0].Raw
	if len(raw) > 200 || !strings.HasPrefix(long, raw) || !utf8.ValidString(raw) || len(raw) < 190 {
		t.Errorf("Raw is %d bytes (valid UTF-8: %v), want the line's first 200 bytes at most, cut between characters",
			len(raw), utf8.ValidString(raw))
	}
}

// The same request in any format is the same job, so a batch converted from CSV to JSONL
// loads nothing new.
func TestReaderSameJobInEveryFormat(t *testing.T) {
	t.Parallel()
	o := ReadOptions{Batch: "b"}
	text := readAll(t, FormatText, "a cat\n", o)
	csv := readAll(t, FormatCSV, "prompt\na cat\n", o)
	jsonl := readAll(t, FormatJSONL, `{"prompt":"a cat"}`+"\n", o)
	want := DeriveID(&Spec{Batch: "b", Prompt: "a cat"}, 1)
	for name, res := range map[string]readResult{"text": text, "csv": csv, "jsonl": jsonl} {
		if len(res.items) != 1 || res.items[0].Spec.ID != want || res.items[0].Spec.Batch != "b" {
			t.Errorf("%s: items %+v, want one with id %s and batch b", name, res.items, want)
		}
	}
}

func TestReaderOccurrences(t *testing.T) {
	t.Parallel()
	file := `{"prompt":"a"}` + "\n" + `{"prompt":"a"}` + "\n"
	first := readAll(t, FormatJSONL, file, ReadOptions{})
	a := Spec{Prompt: "a"}
	if got, want := ids(first.items), []string{DeriveID(&a, 1), DeriveID(&a, 2)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("two identical lines: ids %v, want %v (two distinct images)", got, want)
	}

	again := readAll(t, FormatJSONL, file, ReadOptions{})
	if fmt.Sprint(ids(again.items)) != fmt.Sprint(ids(first.items)) {
		t.Fatalf("re-reading the same file: ids %v, want %v", ids(again.items), ids(first.items))
	}

	grown := readAll(t, FormatJSONL, file+`{"prompt":"b"}`+"\n"+`{"prompt":"a"}`+"\n", ReadOptions{})
	g := ids(grown.items)
	if len(g) != 4 || g[0] != ids(first.items)[0] || g[1] != ids(first.items)[1] {
		t.Fatalf("a file that grew: ids %v, want the old ones %v first", g, ids(first.items))
	}
	seen := map[string]bool{}
	for _, id := range g {
		if seen[id] {
			t.Fatalf("a file that grew: ids %v repeat one", g)
		}
		seen[id] = true
	}

	// Spelling out a default, in the line or in the options, is the same request.
	explicit := readAll(t, FormatJSONL, `{"prompt":"a","model":"flux-kontext-pro","outputFormat":"jpeg"}`+"\n", ReadOptions{})
	viaDefaults := readAll(t, FormatJSONL, `{"prompt":"a"}`+"\n", ReadOptions{Defaults: Spec{Model: "flux-kontext-pro"}})
	if explicit.items[0].Spec.ID != first.items[0].Spec.ID || viaDefaults.items[0].Spec.ID != first.items[0].Spec.ID {
		t.Fatalf("a default spelled out changed the id: %s, %s, want %s",
			explicit.items[0].Spec.ID, viaDefaults.items[0].Spec.ID, first.items[0].Spec.ID)
	}
	other := readAll(t, FormatJSONL, `{"prompt":"a"}`+"\n", ReadOptions{Defaults: Spec{Model: "flux-kontext-max"}})
	if other.items[0].Spec.ID == first.items[0].Spec.ID || other.items[0].Spec.Model != "flux-kontext-max" {
		t.Fatalf("a different default model: %+v, want the model applied and a new id", other.items[0].Spec)
	}

	// An explicit id is taken as given and is not counted as an occurrence.
	mixed := readAll(t, FormatJSONL, `{"id":"x1","prompt":"a"}`+"\n"+`{"prompt":"a"}`+"\n", ReadOptions{})
	if got := ids(mixed.items); len(got) != 2 || got[0] != "x1" || got[1] != DeriveID(&a, 1) {
		t.Fatalf("ids %v, want [x1 %s]", got, DeriveID(&a, 1))
	}
}

func TestReaderDuplicateExplicitID(t *testing.T) {
	t.Parallel()
	res := readAll(t, FormatJSONL, `{"id":"cat","prompt":"a"}`+"\n"+`{"prompt":"b"}`+"\n"+`{"id":"cat","prompt":"c"}`+"\n", ReadOptions{})
	checkLineErrs(t, res.lineErrs, []wantErr{{3, "id", `"cat" is already used on line 1`}})
	if len(res.items) != 2 {
		t.Fatalf("items %v, want the first two lines", prompts(res.items))
	}
}

func TestReaderDefaults(t *testing.T) {
	t.Parallel()
	o := ReadOptions{Batch: "b7", Defaults: Spec{
		ID: "ignored", Batch: "ignored", Prompt: "ignored",
		Model: "flux-kontext-max", AspectRatio: "1:1", OutputFormat: "png", SafetyTolerance: ptr(1),
		PromptUpsampling: ptr(true), EnableTranslation: ptr(false), UploadCn: ptr(true), Watermark: "wm",
	}}
	res := readAll(t, FormatJSONL, `{"prompt":"a"}`+"\n"+`{"prompt":"b","model":"flux-kontext-pro","aspectRatio":"9:16","safetyTolerance":0,"enableTranslation":true}`+"\n", o)
	if len(res.items) != 2 || len(res.lineErrs) != 0 {
		t.Fatalf("items %v, errors %v", res.items, res.lineErrs)
	}
	a, b := res.items[0].Spec, res.items[1].Spec
	if a.Batch != "b7" || a.Model != "flux-kontext-max" || a.AspectRatio != "1:1" || a.OutputFormat != "png" ||
		*a.SafetyTolerance != 1 || !*a.PromptUpsampling || *a.EnableTranslation || !*a.UploadCn || a.Watermark != "wm" || a.ID == "ignored" {
		t.Errorf("line without fields: %+v, want every default applied and batch b7", a)
	}
	if b.Model != "flux-kontext-pro" || b.AspectRatio != "9:16" || *b.SafetyTolerance != 0 || !*b.EnableTranslation || b.OutputFormat != "png" {
		t.Errorf("line with fields: %+v, want its own values to win over the defaults", b)
	}
	// Defaults are copied, not shared: changing one spec does not change the next.
	*res.items[0].Spec.SafetyTolerance = 5
	if *res.items[1].Spec.SafetyTolerance != 0 || *o.Defaults.SafetyTolerance != 1 {
		t.Error("specs share the defaults' pointers")
	}
}

func TestReaderResolvesRelativeImages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cat := writeImage(t, dir, "img/cat.png", "png")
	dog := writeImage(t, dir, "dog.jpg", "jpeg")
	content := `{"prompt":"p","inputImage":"img/cat.png"}
{"prompt":"p","inputImage":"./img/../dog.jpg"}
{"prompt":"p","inputImage":"https://example.com/x.png"}
{"prompt":"p","inputImage":"` + cat + `"}
{"prompt":"p","inputImage":"img/missing.png"}
`
	res := readAll(t, FormatJSONL, content, ReadOptions{BaseDir: dir})
	got := make([]string, len(res.items))
	for i, it := range res.items {
		got[i] = it.Spec.InputImage
	}
	want := []string{cat, dog, "https://example.com/x.png", cat}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inputImage = %q\nwant %q", got, want)
	}
	checkLineErrs(t, res.lineErrs, []wantErr{{5, "inputImage", filepath.Join(dir, "img", "missing.png") + `": no such file`}})

	csv := readAll(t, FormatCSV, "prompt,inputImage\np,img/cat.png\n", ReadOptions{BaseDir: dir})
	if len(csv.items) != 1 || csv.items[0].Spec.InputImage != cat {
		t.Errorf("CSV: items %+v, errors %v, want inputImage %s", csv.items, csv.lineErrs, cat)
	}
}

func TestReaderResolvesAgainstCurrentDirectory(t *testing.T) {
	dir := t.TempDir()
	cat := writeImage(t, dir, "cat.png", "png")
	fileDir := filepath.Join(dir, "prompts")
	writeImage(t, fileDir, "dog.png", "png")
	t.Chdir(dir)

	// Without BaseDir, paths in the file resolve against the current directory.
	res := readAll(t, FormatJSONL, `{"prompt":"p","inputImage":"cat.png"}`+"\n", ReadOptions{})
	if len(res.items) != 1 || res.items[0].Spec.InputImage != cat {
		t.Fatalf("items %+v, errors %v, want inputImage %s", res.items, res.lineErrs, cat)
	}
	// A default image came from the command line, not the file: it resolves against the
	// current directory even with a BaseDir.
	res = readAll(t, FormatText, "make it snow\n", ReadOptions{BaseDir: fileDir, Defaults: Spec{InputImage: "cat.png"}})
	if len(res.items) != 1 || res.items[0].Spec.InputImage != cat || !res.items[0].Spec.IsEdit() {
		t.Fatalf("items %+v, errors %v, want inputImage %s", res.items, res.lineErrs, cat)
	}
}

// Bad files are the same problem in every format, and give the same answer.
func TestReaderBadFiles(t *testing.T) {
	t.Parallel()
	pngPath := writeImage(t, t.TempDir(), "x.png", "png")
	pngBytes, err := os.ReadFile(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	line := map[Format]func(prompt string) string{
		FormatJSONL: func(p string) string { return `{"prompt":"` + p + `"}` },
		FormatCSV:   func(p string) string { return p },
		FormatText:  func(p string) string { return p },
	}
	header := map[Format]string{FormatCSV: "prompt\n"}
	names := map[Format]string{FormatJSONL: "prompts.jsonl", FormatCSV: "prompts.csv", FormatText: "prompts.txt"}

	for _, f := range []Format{FormatJSONL, FormatCSV, FormatText} {
		t.Run(string(f), func(t *testing.T) {
			l, h := line[f], header[f]
			hl := strings.Count(h, "\n") // lines taken by the header

			t.Run("empty", func(t *testing.T) {
				for _, content := range []string{"", "\n\n  \n", "\xEF\xBB\xBF"} {
					r, err := NewReader(strings.NewReader(content), names[f], f, ReadOptions{})
					if err != nil {
						t.Fatal(err)
					}
					_, err = r.Next()
					if !errors.Is(err, ErrNoJobs) || err.Error() != names[f]+": no jobs" {
						t.Fatalf("Next() on %q = %v, want %q", content, err, names[f]+": no jobs")
					}
					if _, err := r.Next(); err != io.EOF {
						t.Fatalf("Next() after no jobs = %v, want io.EOF", err)
					}
				}
				if f == FormatCSV {
					res := readAll(t, f, "prompt,model\n\n", ReadOptions{})
					if len(res.other) != 1 || !errors.Is(res.other[0], ErrNoJobs) {
						t.Fatalf("header only: %v, want no jobs", res.other)
					}
				}
			})

			t.Run("binary", func(t *testing.T) {
				random := make([]byte, 4096)
				for i := range random {
					random[i] = byte(0x80 + (i*7919)%128)
				}
				utf16 := []byte{0xFF, 0xFE, 'p', 0, 'r', 0, 'o', 0, '\n', 0}
				for name, content := range map[string][]byte{"png": pngBytes, "random": random, "utf16": utf16} {
					res := readAll(t, f, string(content), ReadOptions{})
					if len(res.items) != 0 || len(res.other) != 0 || len(res.lineErrs) != 1 {
						t.Fatalf("%s: %d items, errors %v %v, want exactly one error", name, len(res.items), res.lineErrs, res.other)
					}
					le := res.lineErrs[0]
					if !errors.Is(le, ErrNotText) || le.Line != 1 || !strings.Contains(le.Error(), names[f]+":1: not a text file") {
						t.Errorf("%s: %v, want line 1: not a text file", name, le)
					}
				}
			})

			t.Run("NUL byte", func(t *testing.T) {
				content := h + l("one") + "\n" + l("two") + "\n" + l("th\x00ree") + "\n" + l("four") + "\n"
				res := readAll(t, f, content, ReadOptions{})
				if len(res.items) != 0 {
					t.Errorf("items %v, want none from a file found binary at its start", prompts(res.items))
				}
				checkLineErrs(t, res.lineErrs, []wantErr{{hl + 3, "", "not a text file (it contains NUL bytes)"}})
			})

			t.Run("NUL byte far into the file", func(t *testing.T) {
				var b strings.Builder
				b.WriteString(h)
				const good = 300 // well past what is sampled at the start
				for i := range good {
					fmt.Fprintf(&b, "%s\n", l(fmt.Sprintf("picture number %d of a long series", i)))
				}
				b.WriteString(l("th\x00ree") + "\n" + l("four") + "\n")
				res := readAll(t, f, b.String(), ReadOptions{})
				if len(res.items) != good {
					t.Errorf("%d items, want the %d lines before the NUL", len(res.items), good)
				}
				checkLineErrs(t, res.lineErrs, []wantErr{{hl + good + 1, "", "not a text file (NUL byte on this line)"}})
			})

			t.Run("byte order mark", func(t *testing.T) {
				res := readAll(t, f, "\xEF\xBB\xBF"+h+l("one")+"\r\n"+l("two")+"\r\n", ReadOptions{})
				if fmt.Sprint(prompts(res.items)) != "[one two]" || len(res.lineErrs) != 0 {
					t.Errorf("items %q, errors %v, want [one two]", prompts(res.items), res.lineErrs)
				}
			})

			t.Run("10 MB line", func(t *testing.T) {
				huge := l(strings.Repeat("x", 10<<20))
				res := readAll(t, f, h+l("one")+"\n"+huge+"\n"+l("three")+"\n", ReadOptions{})
				if fmt.Sprint(prompts(res.items)) != "[one three]" {
					t.Errorf("items %v, want the lines around the long one", prompts(res.items))
				}
				checkLineErrs(t, res.lineErrs, []wantErr{{hl + 2, "", fmt.Sprintf("line is %d bytes; at most 1048576 bytes", len(huge))}})
				if len(res.lineErrs) == 1 && len(res.lineErrs[0].Raw) > 200 {
					t.Errorf("Raw is %d bytes, want at most 200", len(res.lineErrs[0].Raw))
				}
				if res.lines != hl+3 {
					t.Errorf("Lines() = %d, want %d", res.lines, hl+3)
				}
			})

			t.Run("line limit option", func(t *testing.T) {
				res := readAll(t, f, h+l("short")+"\n"+l(strings.Repeat("y", 100))+"\n", ReadOptions{MaxLineBytes: 50})
				if len(res.items) != 1 {
					t.Errorf("items %v, want the short line", prompts(res.items))
				}
				checkLineErrs(t, res.lineErrs, []wantErr{{hl + 2, "", "at most 50 bytes"}})
			})

			t.Run("invalid UTF-8", func(t *testing.T) {
				res := readAll(t, f, h+l("ok")+"\n"+l("caf\xe9")+"\n"+l("fine")+"\n", ReadOptions{})
				if fmt.Sprint(prompts(res.items)) != "[ok fine]" {
					t.Errorf("items %v, want [ok fine]", prompts(res.items))
				}
				checkLineErrs(t, res.lineErrs, []wantErr{{hl + 2, "prompt", "is not valid UTF-8"}})
			})

			t.Run("no final newline", func(t *testing.T) {
				res := readAll(t, f, h+l("one")+"\n"+l("two"), ReadOptions{})
				if fmt.Sprint(prompts(res.items)) != "[one two]" || res.lines != hl+2 {
					t.Errorf("items %v, Lines() %d, want [one two] and %d", prompts(res.items), res.lines, hl+2)
				}
			})
		})
	}
}

// lineSource generates a JSONL file of n distinct lines on the fly, so that the test
// itself holds none of it.
type lineSource struct {
	n, i int
	pad  string
	buf  []byte
}

func (s *lineSource) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.i == s.n {
			return 0, io.EOF
		}
		s.i++
		s.buf = fmt.Appendf(s.buf[:0], `{"prompt":"picture %d %s","aspectRatio":"1:1"}`+"\n", s.i, s.pad)
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func TestReaderConstantMemory(t *testing.T) {
	const lines = 200_000
	src := &lineSource{n: lines, pad: strings.Repeat("p", 100)}
	r, err := NewReader(src, "big.jsonl", FormatJSONL, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The peak counts garbage not yet collected, so it depends on the GC's pacing: pin the
	// default, whatever GOGC the run was given.
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	var peak uint64
	n := 0
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n%20_000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if n != lines {
		t.Fatalf("read %d jobs, want %d", n, lines)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	live := int64(ms.HeapAlloc) - int64(before)
	fileBytes := int64(lines * 150)
	t.Logf("file ~%d MB; live heap after reading %+d KB; peak heap %d MB", fileBytes>>20, live>>10, peak>>20)
	// The occurrence counter is the only thing that grows: ~20-50 bytes per distinct line,
	// a few MB here, against the ~30 MB that holding the lines would take.
	if live > 16<<20 {
		t.Errorf("live heap grew by %d MB reading a %d MB file, want it bounded", live>>20, fileBytes>>20)
	}
	// Bounded while reading too, not only once done: a reader that took the file in whole
	// and handed it out line by line would pass the check above.
	if grew := int64(peak) - int64(before); grew > fileBytes*3/4 {
		t.Errorf("heap grew by up to %d MB while reading a %d MB file, want it bounded", grew>>20, fileBytes>>20)
	}
	runtime.KeepAlive(r)
}

func FuzzReader(f *testing.F) {
	seeds := []struct {
		format byte
		data   string
	}{
		{0, `{"prompt":"a cat","aspectRatio":"1:1"}` + "\n" + `{"prompt":"x","aspect_ratio":"2:1"}` + "\n"},
		{0, `{"prompt":"a"} trailing` + "\n" + `[1,2]` + "\n" + `{"prompt":5,"safetyTolerance":2.5}`},
		{0, "{\"prompt\":\"caf\xe9\",\"inputImage\":\"img.png\"}\n\xEF\xBB\xBF"},
		{1, "prompt,aspectRatio,uploadCn\n\"a, b\",1:1,true\n\"multi\nline\",,0\n"},
		{1, "prompt,model\n\"unclosed\n"},
		{1, "Prompt,prompt,prompt\na,b,c\n"},
		{1, "prompt\na \"b\" c\n,\n"},
		{2, "# comment\na cat\n\n  a dog  \n"},
		{2, "\x00\x01\x02"},
		{2, "\xff\xfe\x00a"},
	}
	for _, s := range seeds {
		f.Add(s.format, []byte(s.data))
	}
	dir := f.TempDir()
	writeImage(f, dir, "img.png", "png")
	formats := []Format{FormatJSONL, FormatCSV, FormatText}
	f.Fuzz(func(t *testing.T, format byte, data []byte) {
		ff := formats[int(format)%len(formats)]
		r, err := NewReader(bytes.NewReader(data), "fuzz", ff, ReadOptions{BaseDir: dir, MaxLineBytes: 64})
		if err != nil {
			t.Fatal(err)
		}
		limit := bytes.Count(data, []byte("\n")) + 3
		for range limit {
			it, err := r.Next()
			var le *LineError
			switch {
			case err == nil:
				if it.Line < 1 || it.Line > r.Lines() || it.Spec.ID == "" {
					t.Fatalf("item %+v with Lines() = %d", it, r.Lines())
				}
				if verr := it.Spec.validate(MaxInputImageBytes); verr != nil {
					t.Fatalf("item on line %d does not validate: %v", it.Line, verr)
				}
			case err == io.EOF:
				return
			case errors.As(err, &le):
				if le.Line < 1 || le.Line > bytes.Count(data, []byte("\n"))+1 || !strings.HasPrefix(le.Error(), fmt.Sprintf("fuzz:%d: ", le.Line)) {
					t.Fatalf("error %q does not name one of the input's lines", le.Error())
				}
				if len(le.Raw) > 200 {
					t.Fatalf("Raw is %d bytes", len(le.Raw))
				}
			case errors.Is(err, ErrNoJobs):
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		t.Fatalf("Next did not reach io.EOF within %d calls", limit)
	})
}
