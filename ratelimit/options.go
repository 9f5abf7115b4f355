package ratelimit

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults applied by New to zero-valued Options fields.
const (
	// DefaultMargin is the arrival margin as a fraction of the window: a grant counts as
	// arriving up to 2% of the window after it was given (200 ms at 20/10s, 40 ms at 20/2s). It
	// costs 2% of the throughput.
	DefaultMargin = 0.02
	// DefaultMinRate is the floor the adaptive rate never falls below, as a fraction of Rate:
	// 1 call per window at 20/10s, so a throttled account still probes whether Kie is back.
	DefaultMinRate = 0.05
	// DefaultProbeAfter is how long a learned ceiling is kept without a new 429 before the
	// limiter forgets it and probes toward the configured rate again.
	DefaultProbeAfter = 15 * time.Minute
	// DefaultErrorRetry is the RetryAfter given with a denial caused by a Redis error.
	DefaultErrorRetry = time.Second
)

// Adaptive-rate constants. They are not options: the tests and the simulation tune them as a set.
const (
	// decrease is the multiplicative cut of the rate at a 429 that teaches nothing better.
	decrease = 0.5
	// increase is the additive probe: the rate grows by this fraction of its ceiling per window.
	increase = 0.1
	// learnBelow: a 429 after a window that held fewer than this fraction of the current
	// ceiling teaches a new, lower ceiling; above it the 429 is taken as jitter or a transient.
	learnBelow = 0.9
)

// Options configure a Limiter. Name, Account and Rate are required.
type Options struct {
	// Name is the budget, e.g. "generate", "record-info", "transfer": limiters with different
	// names never share tokens.
	Name string
	// Account identifies whose budget this is (a stable, non-secret id such as a hash of the API
	// key). Every process that uses the same Prefix, Account and Name shares one budget.
	Account string
	// Prefix is the Redis key namespace, e.g. "kontextq:". Keys are
	// Prefix + "ratelimit:{" + Account + "/" + Name + "}" and the same with ":grants".
	Prefix string
	// Rate is the limit as the API states it, e.g. {20, 10s}: at most Events in any window of
	// length Per.
	Rate Rate
	// Margin is how late, as a fraction of Per, a call may reach the server after its grant
	// and still never make the server see more than Events in a window: the limiter keeps every
	// closed window of Per*(1+Margin) within Events. Zero means DefaultMargin; it must be
	// below 0.5.
	Margin float64
	// MinRate is the floor of the adaptive rate as a fraction of Rate. Zero means DefaultMinRate.
	MinRate float64
	// MaxReserve bounds how far ahead a waiting caller may be handed a future slot. Each process
	// holds at most one such slot at a time, so it only matters when many processes share an
	// account. Zero means Rate.Per.
	MaxReserve time.Duration
	// ProbeAfter is how long a ceiling learned from 429s is trusted without a new 429. Zero means
	// DefaultProbeAfter.
	ProbeAfter time.Duration
	// ErrorRetry is the RetryAfter returned with a denial caused by a Redis error. Zero means
	// DefaultErrorRetry.
	ErrorRetry time.Duration
	// Now is the local clock used for pacing; nil means time.Now. Grant decisions use Redis TIME.
	Now func() time.Time
	// Observer, if set, is told of every decision and throttle (see Observer).
	Observer Observer
}

func (o Options) withDefaults() Options {
	if o.Margin == 0 {
		o.Margin = DefaultMargin
	}
	if o.MinRate == 0 {
		o.MinRate = DefaultMinRate
	}
	if o.MaxReserve == 0 {
		o.MaxReserve = o.Rate.Per
	}
	if o.ProbeAfter == 0 {
		o.ProbeAfter = DefaultProbeAfter
	}
	if o.ErrorRetry == 0 {
		o.ErrorRetry = DefaultErrorRetry
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports every problem with o at once, naming the field at fault.
func (o Options) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("ratelimit: Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if o.Name == "" {
		bad("Name", "required (e.g. \"generate\")")
	}
	if o.Account == "" {
		bad("Account", "required (a stable non-secret id of the account)")
	}
	for _, f := range [...]struct{ field, v string }{{"Name", o.Name}, {"Account", o.Account}} {
		if strings.ContainsAny(f.v, "{}") {
			bad(f.field, "must not contain braces (they delimit the Redis hash tag)")
		}
	}
	if o.Rate.Events <= 0 || o.Rate.Per <= 0 {
		bad("Rate", "%q: want a positive rate such as 20/10s", o.Rate.String())
	}
	if o.Margin < 0 || o.Margin >= 0.5 {
		bad("Margin", "%v: want 0 <= Margin < 0.5", o.Margin)
	}
	if o.MinRate < 0 || o.MinRate > 1 {
		bad("MinRate", "%v: want a fraction between 0 and 1", o.MinRate)
	}
	if o.MaxReserve < 0 {
		bad("MaxReserve", "%v: must not be negative", o.MaxReserve)
	}
	if o.ProbeAfter < 0 {
		bad("ProbeAfter", "%v: must not be negative", o.ProbeAfter)
	}
	if o.ErrorRetry < 0 {
		bad("ErrorRetry", "%v: must not be negative", o.ErrorRetry)
	}
	return errors.Join(errs...)
}
