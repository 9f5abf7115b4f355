package human

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		400 * time.Millisecond:                "<1s",
		42 * time.Second:                      "42s",
		90 * time.Second:                      "2m",
		2*time.Hour + 5*time.Minute:           "2h 5m",
		3 * time.Hour:                         "3h",
		time.Duration(1e6/2.0) * time.Second:  "5d 18h 53m",
		24*time.Hour + 30*time.Second - 1e6:   "1d",
		time.Duration(7200/2.0) * time.Second: "1h",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}
