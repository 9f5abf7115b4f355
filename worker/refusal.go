package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/kie"
)

// This file is the one home of what a refusal from Kie means and what the worker does about it.
// Judge decides (a table from the endpoint and the error to a Verdict); Worker.refused applies
// the verdict (the limiter of that endpoint, the account pause, the metrics) and turns it into
// the typed error asynq acts on; Classify maps those typed errors to asynq's retry behaviour.
// Changing how a 429, a 455 or a 5xx is handled is a change to this file.

// Endpoint is the Kie call a refusal answered.
type Endpoint string

// The endpoints the worker calls.
const (
	EndpointGenerate    Endpoint = "generate"
	EndpointRecordInfo  Endpoint = "record-info"
	EndpointUpload      Endpoint = "upload"
	EndpointDownload    Endpoint = "download"     // a result (or origin) image from Kie's file host
	EndpointDownloadURL Endpoint = "download-url" // a fresh direct link for a result
)

// Cause is what a refusal says, whatever form it came in (HTTP status or body code).
type Cause int

const (
	// CauseOther is an error that is none of the below: retried with backoff.
	CauseOther Cause = iota
	// CauseRateLimited is a 429: the call was dropped, not queued.
	CauseRateLimited
	// CauseMaintenance is a 455.
	CauseMaintenance
	// CauseServerError is one of Kie's own server errors (500, 408, another 5xx but 501 and
	// 505) or a 2xx answer that could not be understood.
	CauseServerError
	// CauseGateway is a 5xx that is not Kie's (502, 503, 504, a CDN's 52x): something between
	// the worker and Kie gave up.
	CauseGateway
	// CauseNetwork is no answer at all: refused, reset or timed-out connections.
	CauseNetwork
	// CauseBadKey is a 401.
	CauseBadKey
	// CauseOutOfCredits is a 402.
	CauseOutOfCredits
	// CauseFeatureDisabled is a 505.
	CauseFeatureDisabled
	// CauseCDNRefused is HTTP 403 "error code: 1010": Kie's CDN refused the User-Agent.
	CauseCDNRefused
	// CauseRejected is a request Kie will never accept as it is (400 content policy, 422).
	CauseRejected
	// CauseNotFound is a thing that is not, or no longer, there: a 404 (a 403 or 410 from the
	// file host; a 422 to download-url, which Kie gives for URLs it does not serve).
	CauseNotFound
)

func (c Cause) String() string {
	switch c {
	case CauseRateLimited:
		return "rate limited"
	case CauseMaintenance:
		return "maintenance"
	case CauseServerError:
		return "server error"
	case CauseGateway:
		return "gateway error"
	case CauseNetwork:
		return "network error"
	case CauseBadKey:
		return "bad key"
	case CauseOutOfCredits:
		return "out of credits"
	case CauseFeatureDisabled:
		return "feature disabled"
	case CauseCDNRefused:
		return "cdn refused"
	case CauseRejected:
		return "rejected"
	case CauseNotFound:
		return "not found"
	}
	return "error"
}

// Action is what is done about a refusal, or what asynq must do with a failed task.
type Action int

const (
	// Retry with backoff; the attempt counts against the task's retries.
	Retry Action = iota
	// RetryLater without counting a failure (rate limited, waiting for a lease).
	RetryLater
	// PauseAccount stops the account's calls to Kie for a while; not a failure.
	PauseAccount
	// GiveUp ends the job with its reason kept.
	GiveUp
)

func (a Action) String() string {
	return [...]string{"retry", "retry-later", "pause-account", "give-up"}[a]
}

// Verdict is what one refusal means.
type Verdict struct {
	Cause  Cause
	Action Action
	// Throttle: report the refusal to the endpoint's rate limiter, so that every process of
	// the account slows down.
	Throttle bool
	// Delay is how long to wait (RetryLater), or the server's Retry-After (PauseAccount).
	Delay time.Duration
}

// probeSchedule is when an account pause for a cause is first probed, and the cap its doubling
// reaches (see pause.go).
type probeSchedule struct{ first, cap time.Duration }

// probeSchedules: maintenance and outages are probed soon and often, as they are usually short;
// what needs a person (a key, credits, a disabled feature, a refused User-Agent) is probed
// rarely. The sweeper also lifts an out-of-credits pause as soon as credits are back.
var probeSchedules = map[Cause]probeSchedule{
	CauseMaintenance:     {time.Second, 30 * time.Second},
	CauseServerError:     {time.Second, 30 * time.Second},
	CauseGateway:         {time.Second, 30 * time.Second},
	CauseNetwork:         {time.Second, 30 * time.Second},
	CauseBadKey:          {time.Minute, 10 * time.Minute},
	CauseOutOfCredits:    {time.Minute, 5 * time.Minute},
	CauseFeatureDisabled: {time.Minute, 10 * time.Minute},
	CauseCDNRefused:      {time.Minute, 10 * time.Minute},
}

// submitsOnly are the causes that stop only generate calls: polls and downloads of tasks
// already paid for go on.
func submitsOnly(c Cause) bool { return c == CauseOutOfCredits || c == CauseFeatureDisabled }

// stormAfter is how many server errors in a row (Kie's 5xx, a gateway's, no answer at all) from
// Kie's API, with no answer between them, make an outage: the account pauses and is probed.
// Each such error still counts against its task, so a request that always fails runs out of
// retries instead of keeping the account paused.
const stormAfter = 3

func stormCause(c Cause) bool {
	return c == CauseServerError || c == CauseGateway || c == CauseNetwork
}

// apiEndpoint reports the endpoints whose answers say whether Kie's API is up; the file host
// that serves downloads is another service.
func apiEndpoint(ep Endpoint) bool {
	return ep == EndpointGenerate || ep == EndpointRecordInfo || ep == EndpointUpload
}

// Judge decides what err, returned by a call to ep, means. It is the one place that reads Kie's
// codes for the worker.
func Judge(ep Endpoint, err error) Verdict {
	var ke *kie.Error
	if !errors.As(err, &ke) {
		if kie.IsTransient(err) {
			return Verdict{Cause: CauseNetwork, Action: Retry}
		}
		return Verdict{Cause: CauseOther, Action: Retry}
	}
	retryAfter := kie.RetryAfter(err)
	switch {
	case ke.Code == kie.CodeRateLimited:
		return Verdict{Cause: CauseRateLimited, Action: RetryLater, Throttle: true, Delay: max(retryAfter, time.Second)}
	case ke.Code == kie.CodeMaintenance:
		return Verdict{Cause: CauseMaintenance, Action: PauseAccount, Delay: retryAfter}
	case ke.Code == kie.CodeUnauthorized:
		return Verdict{Cause: CauseBadKey, Action: PauseAccount, Delay: retryAfter}
	case ke.Code == kie.CodeInsufficientCredits:
		return Verdict{Cause: CauseOutOfCredits, Action: PauseAccount, Delay: retryAfter}
	case ke.Code == kie.CodeFeatureDisabled:
		return Verdict{Cause: CauseFeatureDisabled, Action: PauseAccount, Delay: retryAfter}
	case kie.IsCDNRefused(err):
		return Verdict{Cause: CauseCDNRefused, Action: PauseAccount, Delay: retryAfter}
	}
	switch ep {
	case EndpointDownload:
		// The file host is a CDN: 403 and 410 mean the file is not there, as 404 does.
		if s := ke.HTTPStatus; s == 404 || s == 403 || s == 410 || ke.Code == kie.CodeNotFound {
			return Verdict{Cause: CauseNotFound, Action: Retry}
		}
	case EndpointDownloadURL:
		if ke.Code == kie.CodeNotFound || ke.Code == kie.CodeInvalidRequest {
			return Verdict{Cause: CauseNotFound, Action: Retry}
		}
	}
	switch {
	case ke.Code == kie.CodeContentPolicy, ke.Code == kie.CodeInvalidRequest:
		return Verdict{Cause: CauseRejected, Action: GiveUp}
	case ke.Code == kie.CodeNotFound:
		return Verdict{Cause: CauseNotFound, Action: Retry}
	case gateway(ke):
		return Verdict{Cause: CauseGateway, Action: Retry}
	case kie.IsTransient(err):
		return Verdict{Cause: CauseServerError, Action: Retry}
	}
	return Verdict{Cause: CauseOther, Action: Retry}
}

// gateway reports a 5xx that is not one of Kie's own codes: a proxy or CDN between the worker and
// Kie gave up (502, 503, 504, Cloudflare's 52x), and may have done so after Kie got the call.
func gateway(e *kie.Error) bool {
	return e.Code >= 500 && e.Code <= 599 &&
		e.Code != kie.CodeServerError && e.Code != kie.CodeGenerationFailed && e.Code != kie.CodeFeatureDisabled
}

// limiterFor is the limiter whose budget a call to ep spends.
func (w *Worker) limiterFor(ep Endpoint) Limiter {
	switch ep {
	case EndpointGenerate:
		return w.o.SubmitLimiter
	case EndpointRecordInfo:
		return w.o.PollLimiter
	}
	return w.o.TransferLimiter
}

// refused applies the verdict on err, returned by a call to ep (probe: the call was the account
// pause's probe, see pause.admit). It reports a 429 to the endpoint's limiter and to the
// observer, pauses the account or extends the pause, and returns the verdict with the error to
// hand to asynq: a *RateLimitedError or a *PausedError when the task is to wait without counting
// a failure, err itself otherwise. Ending a job (GiveUp) is the caller's: only it knows the
// job's state.
func (w *Worker) refused(ctx context.Context, ep Endpoint, err error, probe bool) (Verdict, error) {
	v := Judge(ep, err)
	outage := stormCause(v.Cause) && apiEndpoint(ep)
	if apiEndpoint(ep) {
		if outage {
			w.storm.Add(1)
		} else {
			w.storm.Store(0) // Kie answered
		}
	}
	pausing := v.Action == PauseAccount || (outage && (probe || w.storm.Load() >= stormAfter))
	switch {
	case pausing && probe:
		pe, perr := w.pause.probeFailed(ctx, v.Cause, kie.RetryAfter(err))
		if perr != nil {
			return v, fmt.Errorf("%w (and extending the account pause failed: %v)", err, perr)
		}
		w.log.Warn("probe refused; the account stays paused", "cause", v.Cause.String(), "next_probe_in", pe.Until.Sub(pe.now).Round(time.Millisecond), "endpoint", string(ep), "err", err)
		if outage {
			return v, err
		}
		pe.Err = err
		return v, pe
	case pausing:
		pe, perr := w.pause.start(ctx, v.Cause, kie.RetryAfter(err))
		if perr != nil {
			return v, fmt.Errorf("%w (and pausing the account failed: %v)", err, perr)
		}
		w.log.Error("account paused; probing", "cause", v.Cause.String(), "first_probe_in", pe.Until.Sub(pe.now).Round(time.Millisecond), "endpoint", string(ep), "err", err)
		if outage {
			return v, err
		}
		pe.Err = err
		return v, pe
	case probe:
		w.probeAnswered(ctx, ep) // refused, but not for the pause's reasons: Kie answers
	}
	if v.Action == RetryLater {
		if v.Throttle {
			w.o.Observer.RateLimited(string(ep))
			if terr := w.limiterFor(ep).Throttled(ctx, kie.RetryAfter(err)); terr != nil {
				w.log.Warn("sharing a 429 failed", "endpoint", string(ep), "err", terr)
			}
		}
		return v, &RateLimitedError{RetryAfter: v.Delay, Why: fmt.Sprintf("Kie answered %s to %s", v.Cause, ep), Err: err}
	}
	return v, err
}

// answered records a call to ep that Kie answered with success. When the call was the
// pause's probe the pause ends: every process goes back to full speed.
func (w *Worker) answered(ctx context.Context, ep Endpoint, probe bool) {
	if apiEndpoint(ep) {
		w.storm.Store(0)
	}
	if probe {
		w.probeAnswered(ctx, ep)
	}
}

func (w *Worker) probeAnswered(ctx context.Context, ep Endpoint) {
	if err := w.pause.lift(context.WithoutCancel(ctx), CauseOther); err != nil {
		w.log.Warn("lifting the account pause failed; the next probe lifts it", "err", err)
		return
	}
	w.log.Info("Kie answers again; account pause lifted", "endpoint", string(ep))
}

// RateLimitedError sends a task back to its queue until RetryAfter without counting a failure:
// waiting for the rate limit (or a lease, or a journal) is not a fault, however long it lasts.
type RateLimitedError struct {
	RetryAfter time.Duration
	Why        string
	Err        error // the refusal, if any
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%s; retrying in %s", e.Why, e.RetryAfter.Round(time.Millisecond))
}

func (e *RateLimitedError) Unwrap() error { return e.Err }

// PausedError sends a task back while the account is paused (bad key, no credits, maintenance,
// feature disabled). Not a failure either.
type PausedError struct {
	Until time.Time
	Cause Cause
	Err   error // the refusal that paused the account, when this call met it
	now   time.Time
}

func (e *PausedError) Error() string {
	return fmt.Sprintf("account paused (%s) until %s", e.Cause, e.Until.UTC().Format(time.RFC3339))
}

func (e *PausedError) Unwrap() error { return e.Err }

// Decision is what asynq must do with an error a handler returned.
type Decision struct {
	Action Action
	Delay  time.Duration // for RetryLater
}

// Classify decides what asynq does after err. Refusals have been through refused by then, so it
// only reads the typed errors: waiting errors are retried without counting, SkipRetry gives up,
// anything else is retried with backoff.
func Classify(err error) Decision {
	var rl *RateLimitedError
	var pe *PausedError
	switch {
	case err == nil:
		return Decision{Action: RetryLater}
	case errors.As(err, &rl):
		return Decision{Action: RetryLater, Delay: rl.RetryAfter}
	case errors.As(err, &pe):
		return Decision{Action: RetryLater, Delay: max(pe.Until.Sub(pe.now), time.Second)}
	case errors.Is(err, asynq.SkipRetry):
		return Decision{Action: GiveUp}
	}
	return Decision{Action: Retry}
}

// notSent reports whether a failed generate call certainly created no task: Kie refused it, or
// the connection was refused or could not be made. Anything else after the request was written
// (a timeout, a reset, an answer that is not Kie's) may have created a task at Kie.
func notSent(err error) bool {
	var ke *kie.Error
	if errors.As(err, &ke) {
		switch {
		case ke.HTTPStatus == 0:
			return true // no request was sent
		case ke.Code == 0:
			return false // a 2xx that could not be read may carry a task id never seen
		}
		// Kie's own codes and any 4xx (Kie's, or its CDN refusing the request before it reached
		// Kie) created nothing; a gateway may have given up after Kie created the task.
		return !gateway(ke)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isFailure tells asynq whether an error counts against the task's retries.
func isFailure(err error) bool {
	return Classify(err).Action != RetryLater
}

// retryDelay is asynq's RetryDelayFunc: the delay a typed error asks for, else capped exponential
// backoff with jitter.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if d := Classify(err); d.Action == RetryLater {
		return max(d.Delay, time.Second)
	}
	base := time.Second << min(n, 8) // 1 s … 256 s
	return min(base+time.Duration(rand.Int64N(int64(base/2)+1)), 5*time.Minute)
}
