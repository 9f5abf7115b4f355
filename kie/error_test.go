package kie_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
)

var helpers = []struct {
	name string
	fn   func(error) bool
}{
	{"IsRateLimited", kie.IsRateLimited},
	{"IsBadKey", kie.IsBadKey},
	{"IsOutOfCredits", kie.IsOutOfCredits},
	{"IsMaintenance", kie.IsMaintenance},
	{"IsFeatureDisabled", kie.IsFeatureDisabled},
	{"IsInvalidRequest", kie.IsInvalidRequest},
	{"IsNotFound", kie.IsNotFound},
	{"IsContentPolicy", kie.IsContentPolicy},
	{"IsGenerationFailed", kie.IsGenerationFailed},
	{"IsTimedOut", kie.IsTimedOut},
	{"IsTransient", kie.IsTransient},
	{"IsCDNRefused", kie.IsCDNRefused},
}

// checkHelpers asserts that exactly the helpers in want report err.
func checkHelpers(t *testing.T, err error, want ...string) {
	t.Helper()
	for _, h := range helpers {
		expect := false
		for _, w := range want {
			expect = expect || w == h.name
		}
		if got := h.fn(err); got != expect {
			t.Errorf("%s(%v) = %v, want %v", h.name, err, got, expect)
		}
	}
}

// codeCases is KIE-API.md's table: each error code and the helpers that must recognise it.
var codeCases = []struct {
	code    int
	helpers []string
}{
	{400, []string{"IsContentPolicy"}},
	{401, []string{"IsBadKey"}},
	{402, []string{"IsOutOfCredits"}},
	{404, []string{"IsNotFound"}},
	{408, []string{"IsTimedOut", "IsTransient"}},
	{422, []string{"IsInvalidRequest"}},
	{429, []string{"IsRateLimited"}},
	{455, []string{"IsMaintenance"}},
	{500, []string{"IsTransient"}},
	{501, []string{"IsGenerationFailed"}},
	{505, []string{"IsFeatureDisabled"}},
	{502, []string{"IsTransient"}},
	{503, []string{"IsTransient"}},
	{403, nil}, // a plain 403 is not the CDN refusal
}

// signalForms are the ways Kie signals an error code.
var signalForms = []struct {
	name  string
	reply func(code int) reply
	// httpStatus is the status the error must report.
	httpStatus func(code int) int
	fetchToo   bool // Fetch only sees HTTP statuses: body codes of a 2xx are the caller's business
}{
	{
		name: "HTTP 200 + body code",
		reply: func(code int) reply {
			return reply{status: 200, body: envelope(code, "kie says "+fmt.Sprint(code), "")}
		},
		httpStatus: func(int) int { return 200 },
	},
	{
		name: "HTTP status + envelope",
		reply: func(code int) reply {
			return reply{status: code, body: envelope(code, "kie says "+fmt.Sprint(code), "")}
		},
		httpStatus: func(code int) int { return code },
		fetchToo:   true,
	},
	{
		name: "HTTP status + non-JSON body",
		reply: func(code int) reply {
			return reply{status: code, ctype: "text/html", body: "<html><body>upstream error</body></html>"}
		},
		httpStatus: func(code int) int { return code },
		fetchToo:   true,
	},
	{
		name: "HTTP status + envelope saying 200",
		reply: func(code int) reply {
			return reply{status: code, body: envelope(200, "success", "")}
		},
		httpStatus: func(code int) int { return code },
		fetchToo:   true,
	},
}

func TestEveryCodeInEveryFormForEveryMethod(t *testing.T) {
	for _, m := range methods(t) {
		t.Run(m.name, func(t *testing.T) {
			f := newFake(t)
			c := f.client(t)

			t.Run("200 ok", func(t *testing.T) {
				f.answer(reply{status: 200, body: m.okBody, ctype: m.okCtype})
				m.checkOut(t, c, f.srv.URL)
				if got := f.last(t).path; got != m.path {
					t.Errorf("request went to %s, want %s", got, m.path)
				}
			})

			for _, cc := range codeCases {
				for _, form := range signalForms {
					if m.fetch && !form.fetchToo {
						continue
					}
					t.Run(fmt.Sprintf("%d/%s", cc.code, form.name), func(t *testing.T) {
						f.answer(form.reply(cc.code))
						err := m.call(context.Background(), c, f.srv.URL)
						var e *kie.Error
						if !errors.As(err, &e) {
							t.Fatalf("error = %v (%T), want a *kie.Error", err, err)
						}
						if e.Code != cc.code || e.HTTPStatus != form.httpStatus(cc.code) {
							t.Errorf("Code, HTTPStatus = %d, %d; want %d, %d", e.Code, e.HTTPStatus, cc.code, form.httpStatus(cc.code))
						}
						wantOp := map[string]string{
							"Generate": "generate", "RecordInfo": "record-info", "Credits": "credits",
							"DownloadURL": "download-url", "UploadStream": "upload-stream",
							"UploadBase64": "upload-base64", "UploadURL": "upload-url", "Fetch": kie.OpDownload,
						}[m.name]
						if e.Op != wantOp {
							t.Errorf("Op = %q, want %q", e.Op, wantOp)
						}
						checkHelpers(t, err, cc.helpers...)
						// Wrapping by a caller must not change the verdict.
						checkHelpers(t, fmt.Errorf("job x: %w", err), cc.helpers...)
					})
				}
			}

			t.Run("403 error code 1010", func(t *testing.T) {
				f.answer(reply{status: 403, ctype: "text/plain", body: "error code: 1010"})
				err := m.call(context.Background(), c, f.srv.URL)
				checkHelpers(t, err, "IsCDNRefused")
				if !strings.Contains(err.Error(), "CDN") {
					t.Errorf("error %q does not say the CDN refused it", err)
				}
			})

			if !m.fetch {
				for name, rp := range map[string]reply{
					"non-JSON 200":       {status: 200, ctype: "text/html", body: "<html>maintenance page</html>"},
					"JSON without code":  {status: 200, body: `{"data":{"taskId":"t"}}`},
					"empty 200":          {status: 200, body: ""},
					"success false":      {status: 200, body: `{"success":false,"code":200,"msg":"nope","data":null}`},
					"code 200 data null": {status: 200, body: envelope(200, "success", "")},
				} {
					t.Run(name, func(t *testing.T) {
						f.answer(rp)
						err := m.call(context.Background(), c, f.srv.URL)
						var e *kie.Error
						if !errors.As(err, &e) || e.Code != 0 || e.HTTPStatus != 200 {
							t.Fatalf("error = %#v, want a *kie.Error with Code 0 and HTTP 200", err)
						}
						checkHelpers(t, err, "IsTransient")
					})
				}
			}
		})
	}
}

func TestBodyCodeAndHTTPStatusAreTheSameError(t *testing.T) {
	f := newFake(t)
	c := f.client(t)
	f.answer(reply{status: 200, body: envelope(429, "too many requests", "")})
	_, viaBody := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"})
	f.answer(reply{status: 429, ctype: "text/plain", body: "Too Many Requests"})
	_, viaStatus := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"})
	var a, b *kie.Error
	if !errors.As(viaBody, &a) || !errors.As(viaStatus, &b) {
		t.Fatalf("errors %v / %v are not *kie.Error", viaBody, viaStatus)
	}
	if a.Code != 429 || b.Code != 429 {
		t.Fatalf("codes %d and %d, want 429 for both", a.Code, b.Code)
	}
	for _, h := range helpers {
		if h.fn(viaBody) != h.fn(viaStatus) {
			t.Errorf("%s disagrees: %v for the body code, %v for the HTTP status", h.name, h.fn(viaBody), h.fn(viaStatus))
		}
	}
}

func TestErrorMessage(t *testing.T) {
	long := strings.Repeat("é", 300)
	tests := []struct {
		name string
		err  *kie.Error
		want string
	}{
		{"body code", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 429, Msg: "slow down"},
			"kie generate: code 429 rate limited (HTTP 200): slow down"},
		{"retry after", &kie.Error{Op: "generate", HTTPStatus: 429, Code: 429, Msg: "slow down", RetryAfter: 7 * time.Second},
			"kie generate: code 429 rate limited (HTTP 429), retry after 7s: slow down"},
		{"no request sent", &kie.Error{Op: "credits", Code: 401, Msg: "no API key configured"},
			"kie credits: code 401 bad API key: no API key configured"},
		{"undecodable", &kie.Error{Op: "record-info", HTTPStatus: 200},
			"kie record-info: code 0 unexpected answer (HTTP 200)"},
		{"cdn", &kie.Error{Op: "download", HTTPStatus: 403, Code: 403, Msg: "error code: 1010"},
			"kie download: code 403 refused by the CDN (User-Agent) (HTTP 403): error code: 1010"},
		{"other status", &kie.Error{Op: "download", HTTPStatus: 503, Code: 503},
			"kie download: code 503 service unavailable (HTTP 503)"},
		{"long message", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 422, Msg: long},
			"kie generate: code 422 invalid request (HTTP 200): " + strings.Repeat("é", 100) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	f := newFake(t)
	c := f.client(t)
	tests := []struct {
		name   string
		header string
		want   time.Duration
		approx bool
	}{
		{"seconds", "7", 7 * time.Second, false},
		{"http date", time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), 90 * time.Second, true},
		{"date in the past", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, false},
		{"garbage", "soon", 0, false},
		{"absent", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("Retry-After", tt.header)
			}
			f.answer(reply{status: 429, header: h, body: envelope(429, "rate limited", "")})
			_, err := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"})
			got := kie.RetryAfter(err)
			if tt.approx {
				if got < tt.want-3*time.Second || got > tt.want {
					t.Errorf("RetryAfter = %s, want about %s", got, tt.want)
				}
			} else if got != tt.want {
				t.Errorf("RetryAfter = %s, want %s", got, tt.want)
			}
			if !kie.IsRateLimited(err) {
				t.Errorf("IsRateLimited(%v) = false", err)
			}
		})
	}
	if got := kie.RetryAfter(errors.New("other")); got != 0 {
		t.Errorf("RetryAfter(non-kie error) = %s, want 0", got)
	}
	if got := kie.RetryAfter(nil); got != 0 {
		t.Errorf("RetryAfter(nil) = %s, want 0", got)
	}
}

func TestHelpersOnForeignErrors(t *testing.T) {
	for _, err := range []error{nil, errors.New("boom"), context.Canceled, fmt.Errorf("wrapped: %w", context.Canceled)} {
		checkHelpers(t, err)
	}
	// Network failures are transient without being *kie.Error.
	for _, err := range []error{io.ErrUnexpectedEOF, context.DeadlineExceeded, fmt.Errorf("kie generate: %w", io.EOF)} {
		checkHelpers(t, err, "IsTransient")
	}
}
