package jobs

import (
	"fmt"
	"strings"
	"testing"
)

func TestReaderText(t *testing.T) {
	t.Parallel()
	content := "# prompts for the spring catalogue\n" +
		"a red bicycle\n" +
		"\n" +
		"   a blue kite in the wind  \t\n" +
		"  # an indented comment\n" +
		"a cat, \"quoted\", {not json}\r\n" +
		strings.Repeat("x", 10001) + "\n" +
		"last"
	res := readAll(t, FormatText, content, ReadOptions{Defaults: Spec{Model: "flux-kontext-max"}})
	wantPrompts := `["a red bicycle" "a blue kite in the wind" "a cat, \"quoted\", {not json}" "last"]`
	if got := fmt.Sprintf("%q", prompts(res.items)); got != wantPrompts {
		t.Errorf("prompts %s\nwant    %s", got, wantPrompts)
	}
	var lines []int
	for _, it := range res.items {
		lines = append(lines, it.Line)
		if it.Spec.Model != "flux-kontext-max" {
			t.Errorf("line %d: model %q, want the default", it.Line, it.Spec.Model)
		}
	}
	if fmt.Sprint(lines) != "[2 4 6 8]" {
		t.Errorf("lines %v, want [2 4 6 8]", lines)
	}
	checkLineErrs(t, res.lineErrs, []wantErr{{7, "prompt", "prompts.txt:7: prompt: is 10001 bytes; at most 10000 bytes"}})
}
