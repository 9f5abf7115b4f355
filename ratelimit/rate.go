package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a limit written the way Kie writes it: Events per Per, e.g. "20/10s".
// It means at most Events in any window of length Per (a strict sliding window).
type Rate struct {
	Events int
	Per    time.Duration
}

// ParseRate parses "N/DURATION" ("20/10s", "10/1s", "600/1m"). A bare unit such as "10/s"
// means one of that unit.
func ParseRate(s string) (Rate, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/DURATION such as 20/10s", s)
	}
	events, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || events <= 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a positive whole number of events", s, n)
	}
	per = strings.TrimSpace(per)
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a positive duration such as 10s or 1m", s, per)
	}
	return Rate{Events: events, Per: d}, nil
}

// String formats r as ParseRate reads it.
func (r Rate) String() string {
	if r.Events == 0 && r.Per == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.Events, shortDuration(r.Per))
}

// PerSecond is the long-run rate in events per second.
func (r Rate) PerSecond() float64 {
	if r.Per <= 0 {
		return 0
	}
	return float64(r.Events) / r.Per.Seconds()
}

// Time is how long n events take at r, at best: how long n queued jobs take at the account's
// rate (the one place that arithmetic is done; jobs.EstimateETA builds a batch's ETA on it). ok
// is false when r is no rate.
func (r Rate) Time(n int64) (d time.Duration, ok bool) {
	ps := r.PerSecond()
	if ps <= 0 {
		return 0, false
	}
	return time.Duration(float64(n) / ps * float64(time.Second)), true
}

// MarshalText and UnmarshalText let a Rate live in config files and flags.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
