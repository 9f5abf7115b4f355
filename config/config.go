// Package config is kontextq's one configuration: a Config struct that every command builds once
// and hands down, so that below cmd/ nothing reads the environment.
//
// Each setting has one name in three places: a flag (--rate), an environment variable
// (KONTEXTQ_RATE) and a key of the optional YAML file (rate: 20/10s). Load resolves every
// setting as a string from the highest source that sets it (a flag given on the command line,
// then the environment, then the file, then Default) and only then parses it, so a bad value
// that is overridden does not matter, and every problem in the values that do take effect is
// reported at once, each naming where it came from. Validate checks a Config however it was
// built.
//
// Credentials are Secret (and the Redis URL, whose password is secret, is a SecretURL): they
// print, marshal and log as "[redacted]", and so does a Config holding them.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kontextq/kontextq/ratelimit"
)

// Config is every setting of kontextq. The zero value is not useful: start from Default or Load.
type Config struct {
	// KieAPIKey authenticates every Kie.ai call. Empty is allowed until a command calls Kie:
	// see RequireKieKey.
	KieAPIKey Secret
	// KieBaseURL is the Kie.ai API root (default https://api.kie.ai).
	KieBaseURL string
	// KieUploadURL is the root of Kie.ai's File Upload API, a different host
	// (default https://kieai.redpandaai.co).
	KieUploadURL string
	// RedisURL is the Redis holding the queues and the ledger, in redis.ParseURL's syntax.
	// Empty means an embedded in-process Redis, which only run and demo accept.
	RedisURL SecretURL

	// Rate is how many generate calls the account may make per window (default 20/10s, Kie's
	// limit). It is shared by every worker process of the account.
	Rate ratelimit.Rate
	// PollRate is the budget of record-info (status) calls (default 10/1s).
	PollRate ratelimit.Rate
	// TransferRate is the budget of image downloads and uploads (default 20/1s).
	TransferRate ratelimit.Rate

	// Archive is where images go: a directory, or s3://bucket/prefix (default ./archive).
	Archive string

	// SubmitWorkers, PollWorkers and ArchiveWorkers are the concurrency of each kind of task in
	// one worker process (defaults 4, 8, 4). They are separate so that submits waiting on the
	// rate limit never hold up polls and archives.
	SubmitWorkers  int
	PollWorkers    int
	ArchiveWorkers int
	// GenerationRetries is how many times a job whose generation failed is submitted again
	// (default 2). Each one is a paid request.
	GenerationRetries int

	// PollInterval is the longest wait between two polls of one task (default 3s); the schedule
	// itself follows learned generation times (worker/pollplan.go).
	PollInterval time.Duration
	// FirstPoll is the generation time assumed before any is learned (default 8s): the poll
	// schedule's prior median.
	FirstPoll time.Duration
	// PollTimeout is how long a task may stay silent before polling stops and the sweeper takes
	// it over (default 15m).
	PollTimeout time.Duration
	// Retention is how long a finished job stays in the Redis ledger (default 168h); the
	// archive's sidecars are the lasting record.
	Retention time.Duration
	// ExpiryMargin is how close to its expiry an unarchived result may come before a warning
	// (default 1h).
	ExpiryMargin time.Duration
	// ResultTTL is how long a result image is assumed to stay downloadable after Kie completes it
	// (default 24h). Kie documents 14 days, but other Kie pages say 24 hours and users report
	// less: expiry protection plans for the short figure.
	ResultTTL time.Duration
	// ArchiveOrigin also archives Kie's originImageUrl beside the result (default false). It lives
	// 10 minutes, so it is fetched in the same archive task; failing to fetch it never fails the
	// main image.
	ArchiveOrigin bool
	// EmbedMetadata writes provenance into each archived image (default false): the archived
	// bytes then differ from what Kie served, and the sidecar records both hashes.
	EmbedMetadata bool

	// Namespace prefixes every Redis key and asynq queue name, so several deployments can share
	// one Redis (default kontextq). It matches [a-z0-9_-]{1,32}.
	Namespace string
	// Listen is the host:port of the HTTP server (default 127.0.0.1:8080).
	Listen string
	// PublicURL is the base URL at which Kie can reach this deployment's callbacks. Empty means
	// no callbacks: jobs are polled only.
	PublicURL string
	// WebhookHMACKey verifies signed Kie callbacks (Kie's webhookHmacKey). Empty means
	// callbacks are not verified by signature.
	WebhookHMACKey Secret
	// APIToken is the bearer token that callers of the HTTP API present.
	APIToken Secret

	// Prices is the credits one image costs, by model. Kie does not publish prices, so it is
	// empty unless configured: a budget then measures the price of a model it needs (see
	// worker/budget.go), and costs are otherwise not reported.
	Prices map[string]float64

	// LogLevel is debug, info, warn or error (default info).
	LogLevel string
	// LogFormat is text or json (default text).
	LogFormat string

	// ConfigFile is the YAML file the settings were read from, if any.
	ConfigFile string

	// given holds the settings Load found set (by a flag, the environment or the file).
	given map[string]bool
}

// Given reports whether the setting named by its flag (such as "archive") was set by a flag, the
// environment or the config file, rather than left at its default. It is false for a Config not
// built by Load.
func (c Config) Given(flag string) bool { return c.given[flag] }

// Default returns the configuration used for every setting that nothing else sets.
func Default() Config {
	return Config{
		KieBaseURL:        "https://api.kie.ai",
		KieUploadURL:      "https://kieai.redpandaai.co",
		Rate:              ratelimit.Rate{Events: 20, Per: 10 * time.Second},
		PollRate:          ratelimit.Rate{Events: 10, Per: time.Second},
		TransferRate:      ratelimit.Rate{Events: 20, Per: time.Second},
		Archive:           "./archive",
		SubmitWorkers:     4,
		PollWorkers:       8,
		ArchiveWorkers:    4,
		GenerationRetries: 2,
		PollInterval:      3 * time.Second,
		FirstPoll:         8 * time.Second,
		PollTimeout:       15 * time.Minute,
		Retention:         168 * time.Hour,
		ExpiryMargin:      time.Hour,
		ResultTTL:         24 * time.Hour,
		Namespace:         "kontextq",
		Listen:            "127.0.0.1:8080",
		LogLevel:          "info",
		LogFormat:         "text",
	}
}

// Validate reports every problem of c at once, joined with errors.Join. Each one names the
// setting as "--rate (KONTEXTQ_RATE)" and says what is accepted.
func (c Config) Validate() error { return errors.Join(c.validate(nil)...) }

// validate labels each problem with where the value came from, when that is known.
func (c Config) validate(origins map[string]origin) []error {
	var problems []error
	for _, s := range settings {
		if s.check == nil {
			continue
		}
		o := origins[s.Flag] // the zero origin names both flag and variable
		for _, msg := range leaves(s.check(&c)) {
			problems = append(problems, &problem{where: o.where(s), msg: msg})
		}
	}
	return problems
}

// ErrNoKieKey is returned by RequireKieKey when no API key is configured.
var ErrNoKieKey = errors.New("no Kie.ai API key: set the KIE_API_KEY environment variable " +
	"(or kie-api-key in the config file, or --kie-api-key, whose value other users can see in ps)")

// RequireKieKey reports ErrNoKieKey when the Kie.ai API key is missing. Commands that call Kie
// check it; the others (status, export, sim) run without a key.
func (c Config) RequireKieKey() error {
	if c.KieAPIKey == "" {
		return ErrNoKieKey
	}
	return nil
}

// Entry is one setting as it is shown to people: its name (the flag's, without dashes), its
// environment variable and its value, with secrets redacted.
type Entry struct {
	Name  string
	Env   string
	Value string
}

// Redacted lists every setting in the order of Settings, secrets redacted. It is what String,
// LogValue and MarshalJSON show.
func (c Config) Redacted() []Entry {
	out := make([]Entry, 0, len(settings))
	for _, s := range settings {
		out = append(out, Entry{Name: s.Flag, Env: s.Env, Value: s.show(&c)})
	}
	return out
}

// String returns one "setting = value" line per setting, secrets redacted, for kontextq config.
func (c Config) String() string {
	entries := c.Redacted()
	width := 0
	for _, e := range entries {
		width = max(width, len(e.Name))
	}
	var b strings.Builder
	for _, e := range entries {
		line := fmt.Sprintf("%-*s = %s", width, e.Name, e.Value)
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// LogValue logs c as a group of its settings, secrets redacted.
func (c Config) LogValue() slog.Value {
	entries := c.Redacted()
	attrs := make([]slog.Attr, 0, len(entries))
	for _, e := range entries {
		attrs = append(attrs, slog.String(e.Name, e.Value))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON encodes c as an object of setting name to value as a string (the form the config
// file and the environment take), in the order of Settings, secrets redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range c.Redacted() {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(e.Name)
		if err != nil {
			return nil, fmt.Errorf("marshal config: %w", err)
		}
		v, err := json.Marshal(e.Value)
		if err != nil {
			return nil, fmt.Errorf("marshal config %s: %w", e.Name, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
