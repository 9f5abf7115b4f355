package suggest

import (
	"strings"
	"testing"
)

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"rate", "rate", 0}, {"ratee", "rate", 1}, {"rtae", "rate", 2},
		{"aspectratio", "aspectratios", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{strings.Repeat("a", 65), "a", 1 << 30},
	} {
		if got := Distance(c.a, c.b); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if c.want < 1<<30 {
			if got := Distance(c.b, c.a); got != c.want {
				t.Errorf("Distance(%q, %q) = %d, want %d (symmetric)", c.b, c.a, got, c.want)
			}
		}
	}
}
