package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie"
)

// notSent decides between submitting a job again (Kie certainly created no task) and failing it
// as interrupted (Kie may hold, and have billed, a task for it).
func TestNotSent(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"kie content policy", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 400}, true},
		{"kie rate limited as HTTP 429", &kie.Error{Op: "generate", HTTPStatus: 429, Code: 429}, true},
		{"kie server error in the body", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 500}, true},
		{"kie server error as HTTP 500", &kie.Error{Op: "generate", HTTPStatus: 500, Code: 500}, true},
		{"kie maintenance", &kie.Error{Op: "generate", HTTPStatus: 455, Code: 455}, true},
		{"cdn refusal", &kie.Error{Op: "generate", HTTPStatus: 403, Code: 403, Msg: "error code: 1010"}, true},
		{"no key, nothing sent", &kie.Error{Op: "generate", Code: 401}, true},
		{"wrapped kie refusal", fmt.Errorf("submitting: %w", &kie.Error{Op: "generate", HTTPStatus: 402, Code: 402}), true},
		{"2xx not understood", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 0}, false},
		{"bad gateway", &kie.Error{Op: "generate", HTTPStatus: 502, Code: 502}, false},
		{"gateway timeout", &kie.Error{Op: "generate", HTTPStatus: 504, Code: 504}, false},
		{"cloudflare origin timeout", &kie.Error{Op: "generate", HTTPStatus: 524, Code: 524}, false},
		{"dial failed", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no route to host")}, true},
		{"connection refused", fmt.Errorf("post: %w", syscall.ECONNREFUSED), true},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}, false},
		{"deadline", context.DeadlineExceeded, false},
	} {
		if got := notSent(c.err); got != c.want {
			t.Errorf("%s: notSent = %t, want %t", c.name, got, c.want)
		}
	}
}

// Judge is the one table of what Kie's refusals mean; every form of a code means the same.
func TestJudge(t *testing.T) {
	all := []Endpoint{EndpointGenerate, EndpointRecordInfo, EndpointUpload, EndpointDownload, EndpointDownloadURL}
	api := []Endpoint{EndpointGenerate, EndpointRecordInfo, EndpointUpload}
	ra := 7 * time.Second
	type want struct {
		cause    Cause
		action   Action
		throttle bool
		delay    time.Duration
	}
	for _, c := range []struct {
		name string
		eps  []Endpoint
		err  error
		want want
	}{
		{"429 as HTTP status", all, &kie.Error{HTTPStatus: 429, Code: 429}, want{CauseRateLimited, RetryLater, true, time.Second}},
		{"429 in the body", all, &kie.Error{HTTPStatus: 200, Code: 429}, want{CauseRateLimited, RetryLater, true, time.Second}},
		{"429 with Retry-After", all, fmt.Errorf("wrapped: %w", &kie.Error{HTTPStatus: 429, Code: 429, RetryAfter: ra}), want{CauseRateLimited, RetryLater, true, ra}},
		{"455", all, &kie.Error{HTTPStatus: 200, Code: 455}, want{CauseMaintenance, PauseAccount, false, 0}},
		{"455 with Retry-After", all, &kie.Error{HTTPStatus: 455, Code: 455, RetryAfter: ra}, want{CauseMaintenance, PauseAccount, false, ra}},
		{"401", all, &kie.Error{HTTPStatus: 401, Code: 401}, want{CauseBadKey, PauseAccount, false, 0}},
		{"no key configured", all, &kie.Error{Code: 401}, want{CauseBadKey, PauseAccount, false, 0}},
		{"402", all, &kie.Error{HTTPStatus: 200, Code: 402}, want{CauseOutOfCredits, PauseAccount, false, 0}},
		{"505", all, &kie.Error{HTTPStatus: 505, Code: 505}, want{CauseFeatureDisabled, PauseAccount, false, 0}},
		{"cdn refusal", all, &kie.Error{HTTPStatus: 403, Code: 403, Msg: "error code: 1010"}, want{CauseCDNRefused, PauseAccount, false, 0}},
		{"content policy", api, &kie.Error{HTTPStatus: 200, Code: 400}, want{CauseRejected, GiveUp, false, 0}},
		{"invalid request", api, &kie.Error{HTTPStatus: 422, Code: 422}, want{CauseRejected, GiveUp, false, 0}},
		{"kie server error", all, &kie.Error{HTTPStatus: 200, Code: 500}, want{CauseServerError, Retry, false, 0}},
		{"kie timed out upstream", all, &kie.Error{HTTPStatus: 200, Code: 408}, want{CauseServerError, Retry, false, 0}},
		{"2xx not understood", all, &kie.Error{HTTPStatus: 200, Code: 0}, want{CauseServerError, Retry, false, 0}},
		{"bad gateway", all, &kie.Error{HTTPStatus: 502, Code: 502}, want{CauseGateway, Retry, false, 0}},
		{"service unavailable", all, &kie.Error{HTTPStatus: 503, Code: 503}, want{CauseGateway, Retry, false, 0}},
		{"cloudflare origin timeout", all, &kie.Error{HTTPStatus: 524, Code: 524}, want{CauseGateway, Retry, false, 0}},
		{"connection refused", all, fmt.Errorf("kie generate: %w", syscall.ECONNREFUSED), want{CauseNetwork, Retry, false, 0}},
		{"answer cut short", all, fmt.Errorf("kie download: %w", io.ErrUnexpectedEOF), want{CauseNetwork, Retry, false, 0}},
		{"deadline", all, context.DeadlineExceeded, want{CauseNetwork, Retry, false, 0}},
		{"cancelled", all, context.Canceled, want{CauseOther, Retry, false, 0}},
		{"foreign error", all, errors.New("disk full"), want{CauseOther, Retry, false, 0}},
		{"task unknown", []Endpoint{EndpointRecordInfo}, &kie.Error{HTTPStatus: 200, Code: 404}, want{CauseNotFound, Retry, false, 0}},
		{"file gone", []Endpoint{EndpointDownload}, &kie.Error{HTTPStatus: 404, Code: 404}, want{CauseNotFound, Retry, false, 0}},
		{"file forbidden", []Endpoint{EndpointDownload}, &kie.Error{HTTPStatus: 403, Code: 403, Msg: "AccessDenied"}, want{CauseNotFound, Retry, false, 0}},
		{"file removed", []Endpoint{EndpointDownload}, &kie.Error{HTTPStatus: 410, Code: 410}, want{CauseNotFound, Retry, false, 0}},
		{"not Kie's URL", []Endpoint{EndpointDownloadURL}, &kie.Error{HTTPStatus: 200, Code: 422}, want{CauseNotFound, Retry, false, 0}},
		{"no such result", []Endpoint{EndpointDownloadURL}, &kie.Error{HTTPStatus: 404, Code: 404}, want{CauseNotFound, Retry, false, 0}},
	} {
		for _, ep := range c.eps {
			v := Judge(ep, c.err)
			got := want{v.Cause, v.Action, v.Throttle, v.Delay}
			if got != c.want {
				t.Errorf("%s from %s: %+v (%s, %s), want %+v (%s, %s)", c.name, ep, got, got.cause, got.action, c.want, c.want.cause, c.want.action)
			}
		}
	}
}

// Classify reads only the typed errors refused returns: waiting is never a failure.
func TestClassify(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name    string
		err     error
		action  Action
		failure bool
		delay   time.Duration
	}{
		{"rate limited", fmt.Errorf("x: %w", &RateLimitedError{RetryAfter: 3 * time.Second}), RetryLater, false, 3 * time.Second},
		{"paused", &PausedError{Until: now.Add(time.Minute), now: now, Cause: CauseMaintenance}, RetryLater, false, time.Minute},
		{"paused in the past", &PausedError{Until: now.Add(-time.Minute), now: now}, RetryLater, false, time.Second},
		{"skip retry", fmt.Errorf("%w: bad payload", asynq.SkipRetry), GiveUp, true, 0},
		{"a raw refusal is an ordinary failure", &kie.Error{HTTPStatus: 500, Code: 500}, Retry, true, 0},
	} {
		d := Classify(c.err)
		if d.Action != c.action || d.Delay != c.delay || isFailure(c.err) != c.failure {
			t.Errorf("%s: %+v, failure %t; want %s after %s, failure %t", c.name, d, isFailure(c.err), c.action, c.delay, c.failure)
		}
	}
}

// fakeLimiter counts the 429s reported to it.
type fakeLimiter struct {
	name      string
	throttled []time.Duration
}

func (f *fakeLimiter) WaitAtMost(context.Context, time.Duration) (bool, time.Duration, error) {
	return true, 0, nil
}

func (f *fakeLimiter) Throttled(_ context.Context, retryAfter time.Duration) error {
	f.throttled = append(f.throttled, retryAfter)
	return nil
}

type endpointsSeen struct {
	nopObserver
	rateLimited []string
}

func (o *endpointsSeen) RateLimited(ep string) { o.rateLimited = append(o.rateLimited, ep) }

// A 429 from any endpoint, in either form, slows down the limiter whose budget the call spent,
// and is counted under its endpoint; it never counts against the task.
func TestEvery429ReachesItsLimiter(t *testing.T) {
	env := redistest.New(t)
	kc, err := kie.New(kie.Options{APIKey: "k", BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	submit, poll, transfer := &fakeLimiter{name: "submit"}, &fakeLimiter{name: "poll"}, &fakeLimiter{name: "transfer"}
	obs := &endpointsSeen{}
	w, err := New(Options{Redis: env.Client, Kie: kc, Store: store, Namespace: env.Prefix + "ns",
		SubmitLimiter: submit, PollLimiter: poll, TransferLimiter: transfer, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	for _, c := range []struct {
		ep   Endpoint
		want *fakeLimiter
	}{
		{EndpointGenerate, submit}, {EndpointRecordInfo, poll}, {EndpointUpload, transfer},
		{EndpointDownload, transfer}, {EndpointDownloadURL, transfer},
	} {
		for _, refusal := range []*kie.Error{{HTTPStatus: 429, Code: 429, RetryAfter: 3 * time.Second}, {HTTPStatus: 200, Code: 429, RetryAfter: 3 * time.Second}} {
			before := len(c.want.throttled)
			_, err := w.refused(ctx, c.ep, fmt.Errorf("call: %w", refusal), false)
			var rl *RateLimitedError
			if !errors.As(err, &rl) || rl.RetryAfter != 3*time.Second || isFailure(err) {
				t.Errorf("%s: %v, want a RateLimitedError of 3s that is no failure", c.ep, err)
			}
			if len(c.want.throttled) != before+1 || c.want.throttled[before] != 3*time.Second {
				t.Errorf("%s: the %s limiter heard %v, want one 429 with Retry-After 3s", c.ep, c.want.name, c.want.throttled[before:])
			}
			if n := len(obs.rateLimited); n == 0 || obs.rateLimited[n-1] != string(c.ep) {
				t.Errorf("%s: observer saw %v", c.ep, obs.rateLimited)
			}
		}
	}
	if n := len(submit.throttled) + len(poll.throttled) + len(transfer.throttled); n != 10 {
		t.Errorf("%d 429s reported to limiters, want 10", n)
	}
}
