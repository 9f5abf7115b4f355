package kie

import (
	"math"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"Sun, 01 Jun 2025 10:01:30 GMT", 90 * time.Second}, // RFC 1123
		{"Sunday, 01-Jun-25 10:00:05 GMT", 5 * time.Second}, // RFC 850
		{"Sun Jun  1 10:00:10 2025", 10 * time.Second},      // asctime
		{"Sun, 01 Jun 2025 09:59:00 GMT", 0},                // past
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", time.Duration(math.MaxInt64)}, // absurd, but not negative
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefghij…"},
		{"ééééé", 3, "é…"}, // never cuts a rune in half
	}
	for _, tt := range tests {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
