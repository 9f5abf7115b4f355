package main

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The redrawn progress line never reaches the terminal's last column, where it would wrap and
// leave a copy of itself on every redraw; the bar shrinks, then goes, before the counts are cut.
func TestFitLine(t *testing.T) {
	text := "7/11 archived · 0 failed · 4 generating · 0 archiving · 0 queued" // 64 columns
	cases := []struct {
		name        string
		done, total int64
		width       int
		want        string
	}{
		{"wide: a full bar", 7, 11, 120, "[████████████░░░░░░░░] " + text},
		{"80 columns: a narrower bar", 7, 11, 80, "[███████░░░░░] " + text},
		{"too narrow for a bar", 7, 11, 70, text},
		{"narrower than the text", 7, 11, 40, "7/11 archived · 0 failed · 4 generatin…"},
		{"done", 11, 11, 120, "[████████████████████] " + text},
		{"no jobs yet", 0, 0, 120, "[░░░░░░░░░░░░░░░░░░░░] " + text},
		{"no width", 7, 11, 0, "7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := fitLine(tc.done, tc.total, text, tc.width)
			if got != tc.want {
				t.Errorf("fitLine(width %d) =\n%q\nwant\n%q", tc.width, got, tc.want)
			}
			if n := utf8.RuneCountInString(got); tc.width > 1 && n >= tc.width {
				t.Errorf("line of %d columns on a terminal of %d would wrap", n, tc.width)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("line holds a newline: %q", got)
			}
		})
	}
}
