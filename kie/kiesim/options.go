package kiesim

import (
	"fmt"
	"math"
	"time"
)

// Signal is how the simulator signals an error code: Kie sends some errors as HTTP 200 with a
// non-200 body code and others as a non-200 HTTP status, so a client must check both.
type Signal int

const (
	// SignalEither picks the form at random (from the seed) for every error answer.
	SignalEither Signal = iota
	// SignalBody answers HTTP 200 with the error code in the envelope.
	SignalBody
	// SignalHTTP answers with HTTP status = the error code, and the same envelope.
	SignalHTTP
)

// DirectURLTTL is how long a link from /api/v1/common/download-url stays valid.
const DirectURLTTL = 20 * time.Minute

// Options configures a Sim. The zero value is a well-behaved Kie: every knob is off or at
// Kie's documented value. Defaults are applied in one place (withDefaults).
type Options struct {
	// Key is the accepted bearer key. Default "sim-key".
	Key string
	// Seed drives every random decision (task ids, outcomes, faults), so a serial run is
	// reproducible. Decisions for one task do not shift when another knob changes.
	Seed int64
	// Now is the simulator's clock. Default time.Now. Task progress, expiries and the rate
	// windows all read it, so tests drive time instead of sleeping.
	Now func() time.Time
	// PublicURL is the absolute base for file links (results, uploads) when served standalone,
	// e.g. "http://127.0.0.1:8089". Empty: taken from each request's Host.
	PublicURL string

	// GenerateLimit accepted generate calls per GenerateWindow, a strict sliding window.
	// Default 20 per 10s; a negative limit disables the check (MaxInWindow still measures).
	GenerateLimit  int
	GenerateWindow time.Duration
	// RecordInfoLimit record-info calls per RecordInfoWindow. Default 10 per 1s; negative disables.
	RecordInfoLimit  int
	RecordInfoWindow time.Duration

	// ErrorSignal is the form of every error answer, 429 included. Default SignalEither.
	ErrorSignal Signal
	// AllowDefaultUserAgent turns off the CDN check that refuses a request whose User-Agent is
	// empty or Go's default ("Go-http-client/...") with HTTP 403 and body "error code: 1010".
	AllowDefaultUserAgent bool

	// GenTimeMedian and GenTimeSigma shape the lognormal generation time; it is clamped to
	// [median/10, median*20]. Default 8s and 0.5; a negative sigma makes every task take the median.
	GenTimeMedian time.Duration
	GenTimeSigma  float64
	// GenerationFailureRate is the share of tasks that end with successFlag 3, errorCode 501.
	GenerationFailureRate float64
	// CreateFailureRate is the share of tasks that end at once with successFlag 2, errorCode 500.
	CreateFailureRate float64
	// FlaggedOutputRate is the share of tasks whose output is refused by moderation after
	// generation: successFlag 3, errorCode 400 (the callback's code 400).
	FlaggedOutputRate float64
	// ContentPolicyWords: a prompt containing one (case-insensitive) is refused at submit with
	// code 400; no task is created and nothing is billed.
	ContentPolicyWords []string
	// TransientErrorRate is the share of API and upload calls answered with code 500 before
	// anything happens (no task created, nothing billed).
	TransientErrorRate float64
	// TimeoutRate is the share of tasks whose first record-info at or after completion answers
	// code 408; later polls show the real state.
	TimeoutRate float64

	// Credits is the starting balance. Zero means unlimited (math.Inf; the credit endpoint then
	// reports 1e9 less what was billed); to start empty, call SetCredits(0) after New. Prices is
	// the price of one task per model, billed when the task is created; a model missing from it
	// (or a nil map) costs 1. A generate call answers 402, creating nothing, when the balance is
	// below the price.
	Credits float64
	Prices  map[string]float64

	// ResultTTL: resultImageUrl answers 404 this long after completion. Default 14 days.
	ResultTTL time.Duration
	// OriginTTL: originImageUrl answers 404 this long after completion. Default 10 minutes.
	OriginTTL time.Duration
	// UploadTTL: uploaded files answer 404 this long after upload. Default 24h.
	UploadTTL time.Duration

	// TruncateRate is the share of image downloads cut off mid-body: Content-Length announces
	// the full size, then the connection is closed early.
	TruncateRate float64
	// DownloadErrorRate is the share of image downloads answered with HTTP 500 or 503.
	DownloadErrorRate float64
	// DownloadDelay is waited (in real time) before the first byte of an image.
	DownloadDelay time.Duration

	// Quirks makes record-info answers rotate through the payload drift of KIE-API.md: time
	// formats, errorCode forms, absent-URL forms, unknown extra fields.
	Quirks bool

	// CallbackHMACKey, when set, signs callbacks (X-Webhook-Timestamp, X-Webhook-Signature).
	CallbackHMACKey []byte
	// CallbackDropRate is the share of tasks whose callback is never sent;
	// CallbackDuplicateRate the share whose delivered callback is sent a second time.
	CallbackDropRate      float64
	CallbackDuplicateRate float64
	// CallbackRetryDelays are the waits (simulator clock) before each retry of a callback that
	// did not get HTTP 200. Default 1m, 5m, 15m; a non-nil empty slice means no retries.
	CallbackRetryDelays []time.Duration
	// CallbackTimeout is how long one delivery waits for the answer. Default 15s.
	CallbackTimeout time.Duration

	// RemoteFetch lets the simulator fetch inputImage and file-url-upload URLs on hosts other
	// than loopback, as Kie fetches any public URL. Off (the default) such a URL fails as
	// unreachable, so a test never touches the network; "kontextq sim" turns it on.
	RemoteFetch bool
	// FetchTimeout bounds one fetch of an input image or a URL upload. Default 30s, Kie's
	// documented timeout for URL uploads.
	FetchTimeout time.Duration

	// ImageMaxSide is the long side of generated images in pixels. Default 128.
	ImageMaxSide int

	// RetryAfter, when set, adds a Retry-After header (whole seconds) to 429 and 455 answers.
	// Kie documents none; clients must honour one if it ever appears.
	RetryAfter time.Duration
}

func (o Options) withDefaults() Options {
	if o.Key == "" {
		o.Key = "sim-key"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.GenerateLimit == 0 {
		o.GenerateLimit = 20
	}
	if o.GenerateWindow <= 0 {
		o.GenerateWindow = 10 * time.Second
	}
	if o.RecordInfoLimit == 0 {
		o.RecordInfoLimit = 10
	}
	if o.RecordInfoWindow <= 0 {
		o.RecordInfoWindow = time.Second
	}
	if o.GenTimeMedian <= 0 {
		o.GenTimeMedian = 8 * time.Second
	}
	if o.GenTimeSigma == 0 {
		o.GenTimeSigma = 0.5
	}
	if o.Credits == 0 {
		o.Credits = math.Inf(1)
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = 14 * 24 * time.Hour
	}
	if o.OriginTTL <= 0 {
		o.OriginTTL = 10 * time.Minute
	}
	if o.UploadTTL <= 0 {
		o.UploadTTL = 24 * time.Hour
	}
	if o.CallbackRetryDelays == nil {
		o.CallbackRetryDelays = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}
	}
	if o.CallbackTimeout <= 0 {
		o.CallbackTimeout = 15 * time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = defaultFetchTimeout
	}
	if o.ImageMaxSide <= 0 {
		o.ImageMaxSide = 128
	}
	return o
}

func (o Options) price(model string) float64 {
	if p, ok := o.Prices[model]; ok {
		return p
	}
	return 1
}

// String keeps the bearer key and the HMAC key out of logs and %v / %+v output.
func (o Options) String() string {
	return fmt.Sprintf("kiesim.Options{Key:%s Seed:%d PublicURL:%q GenerateLimit:%d/%s RecordInfoLimit:%d/%s Quirks:%t CallbackHMACKey:%s}",
		redact(o.Key != ""), o.Seed, o.PublicURL, o.GenerateLimit, o.GenerateWindow,
		o.RecordInfoLimit, o.RecordInfoWindow, o.Quirks, redact(len(o.CallbackHMACKey) > 0))
}

// GoString keeps the secrets out of %#v output too.
func (o Options) GoString() string { return o.String() }

func redact(set bool) string {
	if set {
		return "[redacted]"
	}
	return `""`
}
