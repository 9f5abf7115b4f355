package config

import (
	"os"
	"strings"
	"testing"
)

// The README's settings table is generated from Settings(); this test keeps it in step.
// UPDATE_README=1 go test ./config -run README rewrites it.
func TestREADMESettingsTable(t *testing.T) {
	const path = "../README.md"
	const begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no settings table between %q and %q", begin, end)
	}
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, st := range Settings() {
		def := st.Default
		if def != "" {
			def = "`" + def + "`"
		}
		b.WriteString("| `--" + st.Flag + "` | `" + st.Env + "` | " + def + " | " + strings.ReplaceAll(st.Help, "|", "\\|") + " |\n")
	}
	want := b.String()
	if got := s[i+len(begin) : j]; got != want {
		if os.Getenv("UPDATE_README") != "" {
			if err := os.WriteFile(path, []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README.md's settings table is out of date; run UPDATE_README=1 go test ./config -run README\nwant:\n%s", want)
	}
}
