package jobs

import (
	"strings"
	"testing"
)

func TestNameTemplate(t *testing.T) {
	s := &Spec{ID: "j2rf4ufcnocwpnl6wnpnyehgv", Batch: "shoot", File: "/data/in/Spring Shoot.csv", Line: 12,
		Prompt: "A red fox, in SNOW — at dawn!"}
	cases := []struct{ tmpl, want string }{
		{"{id}", ""}, // the default: named by the id, nothing stored
		{"{line:06}-{slug}", "000012-a-red-fox-in-snow-at-dawn"},
		{"{line}_{slug:10}", "12_a-red-fox"},
		{"{file}-{line:04}", "Spring-Shoot-0012"},
		{"{batch}/{id}", "shoot-j2rf4ufcnocwpnl6wnpnyehgv"},
		{"../{slug:3}", "a"}, // no way out of the batch
		{"{slug:2}", "a"},
	}
	for _, tc := range cases {
		nt, err := ParseNameTemplate(tc.tmpl)
		if err != nil {
			t.Errorf("%s: %v", tc.tmpl, err)
			continue
		}
		if got := nt.Name(s); got != tc.want {
			t.Errorf("%s: name %q, want %q", tc.tmpl, got, tc.want)
		}
	}
	long := &Spec{ID: "x", Line: 1, Prompt: strings.Repeat("abcdefghij ", 40)}
	nt, _ := ParseNameTemplate("{line}-{slug:120}-{slug:120}")
	if n := nt.Name(long); len(n) > maxName || strings.HasSuffix(n, "-") {
		t.Errorf("long name %q (%d bytes): want at most %d, not ending in -", n, len(n), maxName)
	}
	unsafe := &Spec{ID: "x", Prompt: "日本の猫"}
	nt, _ = ParseNameTemplate("{slug}")
	if n := nt.Name(unsafe); n != "" {
		t.Errorf("a prompt with no ASCII word renders %q, want \"\" (the id)", n)
	}
}

func TestNameTemplateRefusesWhatItCannotRender(t *testing.T) {
	for tmpl, want := range map[string]string{
		"{line:06}-{title}": "{title}: unknown placeholder",
		"{line:6}":          "{line:0N}",
		"{slug:0}":          "{slug:N}",
		"{id:3}":            "takes no argument",
		"{slug":             "unclosed",
		"photo":             "no placeholder",
	} {
		_, err := ParseNameTemplate(tmpl)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "{line:0N}") {
			t.Errorf("%s: error %v, want one saying %q and listing the placeholders", tmpl, err, want)
		}
	}
}
