package main

import (
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/journal"
)

func TestPreviousCallsWait(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) journal.Record { return journal.Record{SubmittedAt: now.Add(-ago)} }
	cases := []struct {
		name string
		recs []journal.Record
		want time.Duration
	}{
		{"no journal records", nil, 0},
		{"nothing submitted", []journal.Record{{InFlight: true}}, 0},
		{"last call 3s ago", []journal.Record{at(time.Minute), at(3 * time.Second), at(8 * time.Second)}, 7 * time.Second},
		{"last call a window ago", []journal.Record{at(10 * time.Second)}, 0},
		{"long ago", []journal.Record{at(time.Hour)}, 0},
		{"clock skew: in the future", []journal.Record{at(-time.Hour)}, 10 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := previousCallsWait(tc.recs, 10*time.Second, now); got != tc.want {
				t.Errorf("wait %s, want %s", got, tc.want)
			}
		})
	}
}
