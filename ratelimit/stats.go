package ratelimit

import "time"

// Stats is a limiter's view for metrics. The counters are this process's; the rate, ceiling
// and cool-down are the account's shared values as of this process's last Redis round trip.
type Stats struct {
	Name string
	// Granted counts tokens this process was granted.
	Granted int64
	// Denied counts denials, including those decided locally without asking Redis.
	Denied int64
	// Throttled counts Throttled calls (429s) reported by this process.
	Throttled int64
	// Errors counts Redis errors (each one denied a token).
	Errors int64
	// RoundTrips counts script calls to Redis.
	RoundTrips int64
	// CurrentRate is the account's adaptive rate in events per second; a window of
	// Rate.Per*(1+Margin) may hold CurrentRate times its length of grants.
	CurrentRate float64
	// ConfiguredRate is the rate's ceiling as configured, after the margin, in events per second.
	ConfiguredRate float64
	// LearnedCeiling is the limit learned from 429s, in events per Rate.Per; 0 when none.
	LearnedCeiling int
	// ArrivalMargin is how late a call may reach the API after its grant without making the API
	// see more than the limit: Rate.Per*Margin, and more for a while after jitter (429s at a
	// window filled to the ceiling).
	ArrivalMargin time.Duration
	// CooldownUntil is when the account's current cool-down ends (zero or past: none).
	CooldownUntil time.Time
}

// EventKind says what an Observer is told about.
type EventKind int

const (
	// EventGranted: a token was granted to this process.
	EventGranted EventKind = iota
	// EventDenied: no token now; Stats.CooldownUntil and the returned RetryAfter say when.
	EventDenied
	// EventThrottled: this process reported a 429.
	EventThrottled
	// EventError: Redis failed; the token was denied.
	EventError
)

func (k EventKind) String() string {
	switch k {
	case EventGranted:
		return "granted"
	case EventDenied:
		return "denied"
	case EventThrottled:
		return "throttled"
	case EventError:
		return "error"
	}
	return "unknown"
}

// Observer receives a limiter's events for metrics: plain counters and gauges, no metrics
// library here. Observe is called synchronously after each event, with the limiter's Stats as
// they are after it; it must be fast and must not call back into the limiter.
type Observer interface {
	Observe(kind EventKind, s Stats)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(kind EventKind, s Stats)

// Observe calls f.
func (f ObserverFunc) Observe(kind EventKind, s Stats) { f(kind, s) }
