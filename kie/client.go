package kie

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Default hosts, as Kie documents them.
const (
	DefaultBaseURL   = "https://api.kie.ai"
	DefaultUploadURL = "https://kieai.redpandaai.co"
)

// DefaultMaxResponseBytes caps a JSON answer; Kie's answers are a few hundred bytes.
const DefaultMaxResponseBytes int64 = 1 << 20

// Options configures a Client. The zero value is usable apart from APIKey.
type Options struct {
	// APIKey is Kie's bearer key. It may be empty at construction (every API call then fails
	// with a bad-key *Error without network I/O). It is never printed: Options and Client
	// redact it in fmt, slog and error output.
	APIKey string
	// BaseURL is the API host, default DefaultBaseURL. A path prefix is kept: endpoints are
	// joined below it.
	BaseURL string
	// UploadURL is the file-upload host, default DefaultUploadURL. Kie serves uploads from a
	// different host than the API, with the same key.
	UploadURL string
	// HTTPClient sends every request. Default: connect and TLS timeouts of Go's default
	// transport, 60 s to the first response header, and a 10 min backstop on a whole exchange
	// (an image download included); callers bound calls with their context.
	HTTPClient *http.Client
	// UserAgent is sent on every request, default "kontextq/" + Version. Kie's CDN refuses Go's
	// default user agent (HTTP 403, "error code: 1010").
	UserAgent string
	// MaxResponseBytes caps a JSON answer; a larger one is an error. Default
	// DefaultMaxResponseBytes. It does not apply to Fetch, whose body the caller streams.
	MaxResponseBytes int64
}

// Client calls Kie's API. It is safe for concurrent use and holds no per-call state.
type Client struct {
	key       string
	base      *url.URL
	upload    *url.URL
	hc        *http.Client
	userAgent string
	maxBytes  int64
	now       func() time.Time // for Retry-After dates
}

// New validates o, applies its defaults and returns a Client.
func New(o Options) (*Client, error) {
	base, err := parseHost("BaseURL", o.BaseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	upload, err := parseHost("UploadURL", o.UploadURL, DefaultUploadURL)
	if err != nil {
		return nil, err
	}
	if !validKey(o.APIKey) {
		// The key itself must not appear in the message.
		return nil, errors.New("kie: new client: APIKey contains whitespace or control characters")
	}
	if !validUserAgent(o.UserAgent) {
		return nil, fmt.Errorf("kie: new client: UserAgent %q contains characters not allowed in an HTTP header", o.UserAgent)
	}
	if o.MaxResponseBytes < 0 {
		return nil, fmt.Errorf("kie: new client: MaxResponseBytes %d is negative", o.MaxResponseBytes)
	}
	c := &Client{
		key:       o.APIKey,
		base:      base,
		upload:    upload,
		hc:        o.HTTPClient,
		userAgent: o.UserAgent,
		maxBytes:  o.MaxResponseBytes,
		now:       time.Now,
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if c.userAgent == "" {
		c.userAgent = "kontextq/" + Version
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultMaxResponseBytes
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 16 // workers poll and archive concurrently against two hosts
	return &http.Client{Transport: t, Timeout: 10 * time.Minute}
}

func parseHost(field, raw, def string) (*url.URL, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("kie: new client: %s: %w", field, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("kie: new client: %s %q: scheme must be http or https", field, raw)
	case u.Host == "":
		return nil, fmt.Errorf("kie: new client: %s %q: no host", field, raw)
	case u.User != nil:
		return nil, fmt.Errorf("kie: new client: %s: credentials in the URL are not supported (the key goes in APIKey)", field)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("kie: new client: %s %q: must not have a query or fragment", field, raw)
	}
	return u, nil
}

// validKey reports whether k can be sent as a bearer token as is. A key with whitespace or
// control characters is a configuration mistake (a trailing newline from a file, say).
func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if b := k[i]; b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}

// validUserAgent reports whether ua is a header value Go will send unchanged.
func validUserAgent(ua string) bool {
	for i := 0; i < len(ua); i++ {
		if b := ua[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// String describes the client without its key.
func (c *Client) String() string {
	if c == nil {
		return "kie.Client(nil)"
	}
	return fmt.Sprintf("kie.Client{BaseURL: %s, UploadURL: %s, UserAgent: %q, APIKey: %s}",
		c.base, c.upload, c.userAgent, redactedKey(c.key))
}

// GoString keeps %#v from printing the key.
func (c *Client) GoString() string { return c.String() }

// Format keeps every fmt verb (%v, %+v, %#v, %s, %q, ...) from printing the key: without it, %+v
// would print the unexported fields.
func (c *Client) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.String()) }

// LogValue keeps slog handlers from printing the key.
func (c *Client) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("nil")
	}
	return slog.GroupValue(
		slog.String("baseURL", c.base.String()),
		slog.String("uploadURL", c.upload.String()),
		slog.String("userAgent", c.userAgent),
		slog.String("apiKey", redactedKey(c.key)),
	)
}

// String describes o without its key.
func (o Options) String() string {
	return fmt.Sprintf("kie.Options{BaseURL: %q, UploadURL: %q, UserAgent: %q, MaxResponseBytes: %d, HTTPClient: %s, APIKey: %s}",
		o.BaseURL, o.UploadURL, o.UserAgent, o.MaxResponseBytes, clientDesc(o.HTTPClient), redactedKey(o.APIKey))
}

// GoString keeps %#v from printing the key.
func (o Options) GoString() string { return o.String() }

// Format keeps every fmt verb from printing the key.
func (o Options) Format(f fmt.State, verb rune) { formatRedacted(f, verb, o.String()) }

// LogValue keeps slog handlers from printing the key.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("baseURL", o.BaseURL),
		slog.String("uploadURL", o.UploadURL),
		slog.String("userAgent", o.UserAgent),
		slog.Int64("maxResponseBytes", o.MaxResponseBytes),
		slog.String("apiKey", redactedKey(o.APIKey)),
	)
}

func clientDesc(hc *http.Client) string {
	if hc == nil {
		return "default"
	}
	return "custom"
}

func redactedKey(k string) string {
	if k == "" {
		return "(empty)"
	}
	return "[REDACTED]"
}

func formatRedacted(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = fmt.Sprintf("%q", s)
	}
	_, _ = io.WriteString(f, s)
}

// endpoint names one API call: the operation named in errors, the host and the path below it.
type endpoint struct {
	op     string
	upload bool // on the upload host rather than the API host
	method string
	path   string
}

var (
	epGenerate     = endpoint{"generate", false, http.MethodPost, "/api/v1/flux/kontext/generate"}
	epRecordInfo   = endpoint{"record-info", false, http.MethodGet, "/api/v1/flux/kontext/record-info"}
	epCredits      = endpoint{"credits", false, http.MethodGet, "/api/v1/chat/credit"}
	epDownloadURL  = endpoint{"download-url", false, http.MethodPost, "/api/v1/common/download-url"}
	epUploadStream = endpoint{"upload-stream", true, http.MethodPost, "/api/file-stream-upload"}
	epUploadBase64 = endpoint{"upload-base64", true, http.MethodPost, "/api/file-base64-upload"}
	epUploadURL    = endpoint{"upload-url", true, http.MethodPost, "/api/file-url-upload"}
)

// OpDownload is the Op of errors from Fetch.
const OpDownload = "download"

// call is one API request: where to send it and what to send.
type call struct {
	ep          endpoint
	query       url.Values
	body        io.Reader // nil: no body
	contentType string    // default application/json when body is set
}

// doJSON sends v as the JSON body of ep and decodes the answer's data with into.
func (c *Client) doJSON(ctx context.Context, ep endpoint, v any, into func(data json.RawMessage) error) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("kie %s: encode request: %w", ep.op, err)
	}
	return c.do(ctx, call{ep: ep, body: bytes.NewReader(b)}, into)
}

// do is the request pipeline of every API call: auth, headers, a capped answer, and one decoder
// for both of Kie's error forms.
func (c *Client) do(ctx context.Context, cl call, into func(data json.RawMessage) error) error {
	op := cl.ep.op
	if c.key == "" {
		if cl.body != nil {
			if rc, ok := cl.body.(io.Closer); ok {
				_ = rc.Close()
			}
		}
		return noKeyError(op)
	}
	host := c.base
	if cl.ep.upload {
		host = c.upload
	}
	u := host.JoinPath(cl.ep.path)
	if len(cl.query) > 0 {
		u.RawQuery = cl.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, cl.ep.method, u.String(), cl.body)
	if err != nil {
		return fmt.Errorf("kie %s: build request: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if cl.body != nil {
		ct := cl.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("kie %s: %w", op, c.scrub(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return fmt.Errorf("kie %s: read answer (HTTP %d): %w", op, resp.StatusCode, c.scrub(err))
	}
	truncated := int64(len(body)) > c.maxBytes
	if truncated {
		body = body[:c.maxBytes]
	}
	return decodeAnswer(answer{
		op:        op,
		status:    resp.StatusCode,
		header:    resp.Header,
		body:      body,
		truncated: truncated,
		limit:     c.maxBytes,
		now:       c.now(),
		key:       c.key,
	}, into)
}

// scrub removes the key from an error's text should a transport or proxy ever echo it, while
// keeping the chain for errors.Is/As when it does not.
func (c *Client) scrub(err error) error {
	if c.key == "" || !strings.Contains(err.Error(), c.key) {
		return err
	}
	return &scrubbedError{msg: redact(err.Error(), c.key), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
