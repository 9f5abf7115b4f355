package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/kie"
)

// RateLimitedError sends a task back to its queue until RetryAfter without counting a failure:
// waiting for the rate limit is not a fault, however long it lasts.
type RateLimitedError struct {
	RetryAfter time.Duration
	Why        string
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%s; retrying in %s", e.Why, e.RetryAfter.Round(time.Millisecond))
}

// PausedError sends a task back while the account is paused (bad key, no credits, maintenance,
// feature disabled). Not a failure either.
type PausedError struct {
	Until  time.Time
	Reason string
	now    time.Time
}

func (e *PausedError) Error() string {
	return fmt.Sprintf("account paused (%s) until %s", e.Reason, e.Until.UTC().Format(time.RFC3339))
}

// Action is what asynq must do with a failed task.
type Action int

const (
	// Retry with backoff; the attempt counts against the task's retries.
	Retry Action = iota
	// RetryLater without counting a failure (rate limited, waiting for a lease).
	RetryLater
	// PauseAccount stops every submission of the account for a while; not a failure.
	PauseAccount
	// GiveUp ends the job with its reason kept.
	GiveUp
)

func (a Action) String() string {
	return [...]string{"retry", "retry-later", "pause-account", "give-up"}[a]
}

// Decision is the classification of an error.
type Decision struct {
	Action Action
	Delay  time.Duration // for RetryLater and PauseAccount
	Why    string        // for PauseAccount and GiveUp
}

// Pause lengths per cause. A bad key or a disabled feature needs a human; credits are checked by
// the sweeper, which lifts the pause when they return; maintenance is usually short.
var pauseFor = map[string]time.Duration{
	"bad key":          10 * time.Minute,
	"out of credits":   5 * time.Minute,
	"maintenance":      time.Minute,
	"feature disabled": 10 * time.Minute,
	"cdn refused":      10 * time.Minute,
}

// Classify decides what happens after err, the one place that maps errors to asynq's behaviour.
func Classify(err error) Decision {
	var rl *RateLimitedError
	var pe *PausedError
	switch {
	case err == nil:
		return Decision{Action: RetryLater}
	case errors.As(err, &rl):
		return Decision{Action: RetryLater, Delay: rl.RetryAfter}
	case errors.As(err, &pe):
		return Decision{Action: RetryLater, Delay: max(pe.Until.Sub(pe.now), time.Second), Why: pe.Reason}
	case errors.Is(err, asynq.SkipRetry):
		return Decision{Action: GiveUp, Why: err.Error()}
	case kie.IsRateLimited(err):
		return Decision{Action: RetryLater, Delay: max(kie.RetryAfter(err), time.Second)}
	case kie.IsBadKey(err):
		return Decision{Action: PauseAccount, Delay: pauseFor["bad key"], Why: "bad key"}
	case kie.IsOutOfCredits(err):
		return Decision{Action: PauseAccount, Delay: pauseFor["out of credits"], Why: "out of credits"}
	case kie.IsMaintenance(err):
		return Decision{Action: PauseAccount, Delay: max(kie.RetryAfter(err), pauseFor["maintenance"]), Why: "maintenance"}
	case kie.IsFeatureDisabled(err):
		return Decision{Action: PauseAccount, Delay: pauseFor["feature disabled"], Why: "feature disabled"}
	case kie.IsCDNRefused(err):
		return Decision{Action: PauseAccount, Delay: pauseFor["cdn refused"], Why: "cdn refused"}
	case kie.IsContentPolicy(err), kie.IsInvalidRequest(err):
		return Decision{Action: GiveUp, Why: err.Error()}
	default:
		return Decision{Action: Retry}
	}
}

// notSent reports whether a failed generate call certainly created no task: Kie refused it, or
// the connection was refused or could not be made. Anything else after the request was written
// (a timeout, a reset, an answer that is not Kie's) may have created a task at Kie.
func notSent(err error) bool {
	var ke *kie.Error
	if errors.As(err, &ke) {
		return refused(ke)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// refused reports whether an error answer certainly created no task. Kie's own codes and any
// 4xx (Kie's, or its CDN refusing the request before it reached Kie) did not. A 2xx answer that
// could not be read (code 0) may carry a task id never seen, and a 5xx that is not one of Kie's
// (502, 503, 504, Cloudflare's 52x: a gateway between the worker and Kie gave up) may hide a task
// Kie went on to create.
func refused(e *kie.Error) bool {
	switch {
	case e.HTTPStatus == 0:
		return true // no request was sent
	case e.Code == 0:
		return false
	case e.Code >= 500:
		return e.Code == kie.CodeServerError || e.Code == kie.CodeGenerationFailed || e.Code == kie.CodeFeatureDisabled
	}
	return true
}

// isFailure tells asynq whether an error counts against the task's retries.
func isFailure(err error) bool {
	switch Classify(err).Action {
	case RetryLater, PauseAccount:
		return false
	}
	return true
}

// retryDelay is asynq's RetryDelayFunc: the delay a typed error asks for, else capped exponential
// backoff with jitter.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if d := Classify(err); d.Action == RetryLater || d.Action == PauseAccount {
		return max(d.Delay, time.Second)
	}
	base := time.Second << min(n, 8) // 1 s … 256 s
	return min(base+time.Duration(rand.Int64N(int64(base/2)+1)), 5*time.Minute)
}
