package kie

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Kie's codes (KIE-API.md). They arrive as the envelope's code, or as the HTTP status.
const (
	CodeOK                  = 200
	CodeContentPolicy       = 400 // prompt or image flagged
	CodeUnauthorized        = 401 // missing or invalid key
	CodeInsufficientCredits = 402
	CodeNotFound            = 404
	CodeTimedOut            = 408 // upstream gave no result for more than 10 minutes
	CodeInvalidRequest      = 422 // parameter validation failed
	CodeRateLimited         = 429 // the request was not queued
	CodeMaintenance         = 455
	CodeServerError         = 500
	CodeGenerationFailed    = 501
	CodeFeatureDisabled     = 505
)

// cdnRefusal is the body Kie's CDN sends with HTTP 403 when it refuses the User-Agent.
const cdnRefusal = "error code: 1010"

// Error is an answer from Kie (or its CDN) that is not a success.
//
// Code is the envelope's code when the body is a Kie envelope with a non-200 code, otherwise the
// HTTP status; so an error signalled as HTTP 200 + body code 429 and one signalled as HTTP 429
// have the same Code. Code 0 means a 2xx answer that could not be understood (not an envelope,
// malformed data, oversized), which is treated as transient.
type Error struct {
	Op         string        // the call: "generate", "record-info", "upload-stream", "download", ...
	HTTPStatus int           // 0 when no request was sent
	Code       int           // see the type's comment
	Msg        string        // Kie's msg (localized: never branch on it) or a snippet of the body
	RetryAfter time.Duration // from a Retry-After header; 0 when absent
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("kie")
	if e.Op != "" {
		b.WriteString(" ")
		b.WriteString(e.Op)
	}
	fmt.Fprintf(&b, ": code %d %s", e.Code, e.meaning())
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(truncate(e.Msg, 200))
	}
	return b.String()
}

func (e *Error) meaning() string {
	switch e.Code {
	case 0:
		return "unexpected answer"
	case CodeContentPolicy:
		return "content policy violation"
	case CodeUnauthorized:
		return "bad API key"
	case CodeInsufficientCredits:
		return "insufficient credits"
	case CodeNotFound:
		return "not found"
	case CodeTimedOut:
		return "timed out upstream"
	case CodeInvalidRequest:
		return "invalid request"
	case CodeRateLimited:
		return "rate limited"
	case CodeMaintenance:
		return "maintenance"
	case CodeServerError:
		return "server error"
	case CodeGenerationFailed:
		return "generation failed"
	case CodeFeatureDisabled:
		return "feature disabled"
	}
	if e.cdnRefused() {
		return "refused by the CDN (User-Agent)"
	}
	if t := http.StatusText(e.Code); t != "" {
		return strings.ToLower(t)
	}
	return "error"
}

func (e *Error) cdnRefused() bool {
	return e.HTTPStatus == http.StatusForbidden && strings.Contains(strings.ToLower(e.Msg), cdnRefusal)
}

func (e *Error) transient() bool {
	switch {
	case e.Code == 0, e.Code == CodeTimedOut:
		return true
	case e.Code == CodeGenerationFailed, e.Code == CodeFeatureDisabled:
		return false // a failed task stays failed; a disabled feature needs a human
	}
	return e.Code >= 500 && e.Code <= 599
}

func codeIs(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsRateLimited reports a 429: the request was dropped, not queued; slow down and retry.
func IsRateLimited(err error) bool { return codeIs(err, CodeRateLimited) }

// IsBadKey reports a 401: the key is missing, wrong or revoked.
func IsBadKey(err error) bool { return codeIs(err, CodeUnauthorized) }

// IsOutOfCredits reports a 402.
func IsOutOfCredits(err error) bool { return codeIs(err, CodeInsufficientCredits) }

// IsMaintenance reports a 455.
func IsMaintenance(err error) bool { return codeIs(err, CodeMaintenance) }

// IsFeatureDisabled reports a 505.
func IsFeatureDisabled(err error) bool { return codeIs(err, CodeFeatureDisabled) }

// IsInvalidRequest reports a 422: the request itself is wrong; retrying it cannot help.
func IsInvalidRequest(err error) bool { return codeIs(err, CodeInvalidRequest) }

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return codeIs(err, CodeNotFound) }

// IsContentPolicy reports a 400: the prompt or image was flagged.
func IsContentPolicy(err error) bool { return codeIs(err, CodeContentPolicy) }

// IsGenerationFailed reports a 501: the task failed; a new submission is a new paid task.
func IsGenerationFailed(err error) bool { return codeIs(err, CodeGenerationFailed) }

// IsTimedOut reports a 408 from Kie (upstream gave no result in time). Network timeouts are
// not 408s; IsTransient covers them.
func IsTimedOut(err error) bool { return codeIs(err, CodeTimedOut) }

// IsCDNRefused reports HTTP 403 with body "error code: 1010": Kie's CDN refused the
// User-Agent. It is a client configuration problem, not a bad key.
func IsCDNRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.cdnRefused()
}

// IsTransient reports an error that a later retry of the same call may not repeat: codes 500,
// 408 and other 5xx except 501 and 505, a 2xx answer that could not be understood (Code 0), and
// network failures (timeouts, refused or reset connections, answers cut short), including the
// caller's context deadline. A cancelled context is not transient: someone chose to stop.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.transient()
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTimeout || dns.IsTemporary
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RetryAfter is how long the answer asked to wait (its Retry-After header), or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date. Anything else, or a
// date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > math.MaxInt64/int64(time.Second) {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// answer is everything decodeAnswer needs from one HTTP exchange.
type answer struct {
	op        string
	status    int
	header    http.Header
	body      []byte // at most limit bytes
	truncated bool   // the body was longer than limit
	limit     int64
	now       time.Time
	key       string // redacted from every message
}

// envelope is Kie's {code, msg, data} (uploads add success).
type envelope struct {
	code    int
	msg     string
	data    json.RawMessage
	success *bool
}

// decodeAnswer is the one place an answer becomes either data (handed to into) or an *Error.
// into may be nil when the data does not matter.
func decodeAnswer(a answer, into func(data json.RawMessage) error) error {
	ok2xx := a.status >= 200 && a.status <= 299
	e := &Error{Op: a.op, HTTPStatus: a.status, RetryAfter: parseRetryAfter(a.header.Get("Retry-After"), a.now)}
	if a.key != "" && bytes.Contains(a.body, []byte(a.key)) {
		// Redact before any cut, so that no prefix of the key survives a truncation.
		a.body = bytes.ReplaceAll(a.body, []byte(a.key), []byte("[REDACTED]"))
	}
	var env envelope
	isEnv := false
	if !a.truncated {
		env, isEnv = parseEnvelope(a.body)
	}
	switch {
	case a.truncated && ok2xx:
		e.Msg = fmt.Sprintf("answer larger than %d bytes", a.limit)
	case isEnv && env.code != CodeOK:
		e.Code, e.Msg = env.code, env.msg
	case !ok2xx:
		// Kie said 200 in the body but the status disagrees: the status is the signal.
		e.Code = a.status
		if isEnv {
			e.Msg = env.msg
		} else {
			e.Msg = bodySnippet(a.body)
		}
	case !isEnv:
		e.Msg = "answer is not a Kie envelope: " + bodySnippet(a.body)
	case env.success != nil && !*env.success:
		e.Msg = "answer has success false: " + env.msg
	default:
		if into == nil {
			return nil
		}
		err := into(env.data)
		if err == nil {
			return nil
		}
		e.Msg = "malformed data: " + err.Error()
	}
	e.Msg = redact(e.Msg, a.key)
	return e
}

// parseEnvelope decodes body as a Kie envelope: a JSON object whose code is a positive number
// (or numeric string).
func parseEnvelope(body []byte) (envelope, bool) {
	var raw struct {
		Code    json.RawMessage `json:"code"`
		Msg     json.RawMessage `json:"msg"`
		Message json.RawMessage `json:"message"`
		Data    json.RawMessage `json:"data"`
		Success *bool           `json:"success"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return envelope{}, false
	}
	code, present, err := looseInt(raw.Code)
	if err != nil || !present || code <= 0 || code > math.MaxInt32 {
		return envelope{}, false
	}
	msg, _ := looseString(raw.Msg)
	if msg == "" {
		msg, _ = looseString(raw.Message)
	}
	return envelope{code: int(code), msg: truncate(msg, 1024), data: raw.Data, success: raw.Success}, true
}

// bodySnippet is a printable prefix of a non-JSON body, enough to recognise a proxy's or CDN's
// error page.
func bodySnippet(body []byte) string {
	const max = 512
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(body), "?")), " ")
	if s == "" {
		return "(empty body)"
	}
	snip := truncate(s, max)
	// The CDN refusal must survive the cut: IsCDNRefused looks for it in Msg.
	if !strings.Contains(strings.ToLower(snip), cdnRefusal) && bytes.Contains(bytes.ToLower(body), []byte(cdnRefusal)) {
		snip = cdnRefusal + "; " + snip
	}
	return snip
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// redact removes the key from text that came from the network: a server or proxy might echo the
// Authorization header back.
func redact(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[REDACTED]")
}
