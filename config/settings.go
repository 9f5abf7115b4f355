package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kontextq/kontextq/internal/redisconn"
	"github.com/kontextq/kontextq/ratelimit"
)

// Setting describes one setting for people: help output and the README.
type Setting struct {
	// Flag is the flag's name without dashes; it is also the setting's key in the config file.
	Flag string
	// Env is the environment variable.
	Env string
	// Default is the value used when nothing sets it, as it would be written ("" for none).
	Default string
	// Help says what the setting means.
	Help string
}

// Settings returns every setting in the order they are documented and shown.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = s.Setting
	}
	return out
}

// models are the Flux Kontext models Kie offers, the only keys Prices may have.
var models = []string{"flux-kontext-pro", "flux-kontext-max"}

// setting ties a Setting to the Config field it fills. parse turns the raw string from any
// source into the field; show is its inverse with secrets redacted; check validates the field
// however it was set, returning one error per problem (errors.Join for several).
type setting struct {
	Setting
	typ    string              // the value's name in help output: --rate rate
	redact func(string) string // how to show a raw value of a secret setting; nil if not secret
	list   bool                // the flag may be repeated; its values are joined with commas
	parse  func(c *Config, raw string) error
	show   func(c *Config) string
	check  func(c *Config) error
}

// settings is the table every part of the package walks. Defaults are filled in by init from
// Default(), so they are written once.
var settings = []*setting{
	secretSetting("kie-api-key", "KIE_API_KEY",
		"Kie.ai API key; prefer the environment variable, since other users can read a flag's value in ps",
		func(c *Config) *Secret { return &c.KieAPIKey }),
	urlSetting("kie-base-url", "KIE_BASE_URL", "base URL of the Kie.ai API", false,
		func(c *Config) *string { return &c.KieBaseURL }),
	urlSetting("kie-upload-url", "KIE_UPLOAD_URL", "base URL of Kie.ai's file upload API", false,
		func(c *Config) *string { return &c.KieUploadURL }),
	{
		Setting: Setting{Flag: "redis-url", Env: "REDIS_URL",
			Help: "Redis holding the queues and the job ledger: one node, redis://:password@host:6379/0 (rediss:// for TLS); " +
				"a Cluster, redis://:password@host1:6379?addr=host2:6379&addr=host3:6379 (or any one node of it); " +
				"Sentinel, redis://sentinel1:26379?master_name=NAME&addr=sentinel2:26379&password=PASSWORD " +
				"(user info before @ is the sentinels' own). Empty runs an embedded in-process Redis (run and demo only)"},
		typ:    "url",
		redact: func(raw string) string { return SecretURL(raw).String() },
		parse: func(c *Config, raw string) error {
			c.RedisURL = SecretURL(strings.TrimSpace(raw))
			return nil
		},
		show:  func(c *Config) string { return c.RedisURL.String() },
		check: func(c *Config) error { return checkRedisURL(c.RedisURL) },
	},
	rateSetting("rate", "KONTEXTQ_RATE", "generate calls the account may make per window, as N/DURATION",
		func(c *Config) *ratelimit.Rate { return &c.Rate }),
	rateSetting("poll-rate", "KONTEXTQ_POLL_RATE", "record-info (status) calls allowed per window",
		func(c *Config) *ratelimit.Rate { return &c.PollRate }),
	rateSetting("transfer-rate", "KONTEXTQ_TRANSFER_RATE", "image downloads and uploads allowed per window",
		func(c *Config) *ratelimit.Rate { return &c.TransferRate }),
	{
		Setting: Setting{Flag: "archive", Env: "KONTEXTQ_ARCHIVE",
			Help: "where images are archived: a directory, or s3://bucket/prefix"},
		typ:   "string",
		parse: func(c *Config, raw string) error { c.Archive = strings.TrimSpace(raw); return nil },
		show:  func(c *Config) string { return c.Archive },
		check: func(c *Config) error { return checkArchive(c.Archive) },
	},
	intSetting("submit-workers", "KONTEXTQ_SUBMIT_WORKERS", "concurrent submit tasks per worker process", 1,
		func(c *Config) *int { return &c.SubmitWorkers }),
	intSetting("poll-workers", "KONTEXTQ_POLL_WORKERS", "concurrent poll tasks per worker process", 1,
		func(c *Config) *int { return &c.PollWorkers }),
	intSetting("archive-workers", "KONTEXTQ_ARCHIVE_WORKERS", "concurrent archive tasks per worker process", 1,
		func(c *Config) *int { return &c.ArchiveWorkers }),
	intSetting("generation-retries", "KONTEXTQ_GENERATION_RETRIES",
		"resubmissions of a job whose generation failed (each one is paid)", 0,
		func(c *Config) *int { return &c.GenerationRetries }),
	durationSetting("poll-interval", "KONTEXTQ_POLL_INTERVAL", "longest wait between two polls of one task (polls follow learned generation times)",
		func(c *Config) *time.Duration { return &c.PollInterval }),
	durationSetting("first-poll", "KONTEXTQ_FIRST_POLL", "generation time assumed before any is learned (the poll schedule's prior median)",
		func(c *Config) *time.Duration { return &c.FirstPoll }),
	durationSetting("poll-timeout", "KONTEXTQ_POLL_TIMEOUT",
		"stop polling a silent task after this long and leave it to the sweeper",
		func(c *Config) *time.Duration { return &c.PollTimeout }),
	durationSetting("retention", "KONTEXTQ_RETENTION", "how long finished jobs stay in the Redis ledger",
		func(c *Config) *time.Duration { return &c.Retention }),
	durationSetting("expiry-margin", "KONTEXTQ_EXPIRY_MARGIN",
		"warn when an unarchived result is this close to its expiry",
		func(c *Config) *time.Duration { return &c.ExpiryMargin }),
	durationSetting("result-ttl", "KONTEXTQ_RESULT_TTL",
		"how long a result image is assumed to stay downloadable after Kie completes it; archive deadlines and "+
			"expiry warnings count from it (Kie documents 14 days, but other Kie pages say 24h, so plan for the short one)",
		func(c *Config) *time.Duration { return &c.ResultTTL }),
	boolSetting("archive-origin", "KONTEXTQ_ARCHIVE_ORIGIN",
		"also archive Kie's originImageUrl as <batch>/<id>.origin.<ext>; it lives only 10 minutes, and failing "+
			"to fetch it never holds up the main image",
		func(c *Config) *bool { return &c.ArchiveOrigin }),
	boolSetting("embed-metadata", "KONTEXTQ_EMBED_METADATA",
		"write provenance into each archived image (XMP in JPEG, XMP and iTXt in PNG: prompt, model, request, task and "+
			"job id, batch, IPTC DigitalSourceType trainedAlgorithmicMedia); the archived bytes then differ from what Kie "+
			"served, and the sidecar keeps both hashes",
		func(c *Config) *bool { return &c.EmbedMetadata }),
	{
		Setting: Setting{Flag: "namespace", Env: "KONTEXTQ_NAMESPACE",
			Help: "prefix of every Redis key and asynq queue name, so deployments can share one Redis; [a-z0-9_-]{1,32}"},
		typ:   "string",
		parse: func(c *Config, raw string) error { c.Namespace = strings.TrimSpace(raw); return nil },
		show:  func(c *Config) string { return c.Namespace },
		check: func(c *Config) error {
			if !namespaceRE.MatchString(c.Namespace) {
				return fmt.Errorf("%q is not a namespace; want 1 to 32 of a-z, 0-9, _ and -", c.Namespace)
			}
			return nil
		},
	},
	{
		Setting: Setting{Flag: "listen", Env: "KONTEXTQ_LISTEN",
			Help: "host:port of the HTTP server (dashboard, metrics, API, callbacks)"},
		typ:   "host:port",
		parse: func(c *Config, raw string) error { c.Listen = strings.TrimSpace(raw); return nil },
		show:  func(c *Config) string { return c.Listen },
		check: func(c *Config) error { return checkListen(c.Listen) },
	},
	urlSetting("public-url", "KONTEXTQ_PUBLIC_URL",
		"base URL at which Kie can reach this deployment for callbacks; empty means poll only", true,
		func(c *Config) *string { return &c.PublicURL }),
	secretSetting("webhook-hmac-key", "KIE_WEBHOOK_HMAC_KEY",
		"key that verifies Kie's signed callbacks (Kie's webhookHmacKey); prefer the environment variable",
		func(c *Config) *Secret { return &c.WebhookHMACKey }),
	secretSetting("api-token", "KONTEXTQ_API_TOKEN",
		"bearer token for the HTTP API; prefer the environment variable",
		func(c *Config) *Secret { return &c.APIToken }),
	{
		Setting: Setting{Flag: "price", Env: "KONTEXTQ_PRICES",
			Help: "credits one image of a model costs, as model=credits; repeat the flag for each model, " +
				"or give a comma-separated list (flux-kontext-pro=5,flux-kontext-max=10). Kie does not publish prices, " +
				"so none is assumed: a model without one is measured from the balance when a budget (--max-credits, " +
				"--min-balance) needs it"},
		typ:   "model=credits",
		list:  true,
		parse: parsePrices,
		show:  func(c *Config) string { return formatPrices(c.Prices) },
		check: func(c *Config) error { return checkPrices(c.Prices) },
	},
	enumSetting("log-level", "KONTEXTQ_LOG_LEVEL", "log level", []string{"debug", "info", "warn", "error"},
		func(c *Config) *string { return &c.LogLevel }),
	enumSetting("log-format", "KONTEXTQ_LOG_FORMAT", "log format", []string{"text", "json"},
		func(c *Config) *string { return &c.LogFormat }),
	{
		Setting: Setting{Flag: "config", Env: "KONTEXTQ_CONFIG",
			Help: "YAML file of settings, keyed by flag name (rate: 20/10s)"},
		typ:   "file",
		parse: func(c *Config, raw string) error { c.ConfigFile = raw; return nil },
		show:  func(c *Config) string { return c.ConfigFile },
	},
}

// configFlag is the setting that names the file; the file cannot set it.
const configFlag = "config"

func init() {
	d := Default()
	for _, s := range settings {
		s.Default = s.show(&d)
	}
}

var namespaceRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

func secretSetting(flag, env, help string, field func(*Config) *Secret) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "string",
		redact:  func(raw string) string { return Secret(raw).String() },
		parse:   func(c *Config, raw string) error { *field(c) = Secret(raw); return nil },
		show:    func(c *Config) string { return field(c).String() },
		check: func(c *Config) error {
			// A key read with $(cat file) keeps its newline; Kie would then answer 401 for
			// every job, so this is caught here, without echoing the value.
			if strings.IndexFunc(field(c).Reveal(), isSpaceOrControl) >= 0 {
				return errors.New("contains a space or control character (a trailing newline?); the value is not shown")
			}
			return nil
		},
	}
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\u00a0' || r == '\u2028' || r == '\u2029'
}

func urlSetting(flag, env, help string, optional bool, field func(*Config) *string) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "url",
		parse:   func(c *Config, raw string) error { *field(c) = strings.TrimSpace(raw); return nil },
		show:    func(c *Config) string { return *field(c) },
		check: func(c *Config) error {
			v := *field(c)
			if v == "" && optional {
				return nil
			}
			return checkHTTPURL(v)
		},
	}
}

func rateSetting(flag, env, help string, field func(*Config) *ratelimit.Rate) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "rate",
		parse: func(c *Config, raw string) error {
			r, err := ratelimit.ParseRate(raw)
			if err != nil {
				return fmt.Errorf("%q is not a rate; write N/DURATION such as 20/10s", raw)
			}
			*field(c) = r
			return nil
		},
		show: func(c *Config) string { return field(c).String() },
		check: func(c *Config) error {
			if r := *field(c); r.Events < 1 || r.Per <= 0 {
				return fmt.Errorf("%q is not a rate; write N/DURATION such as 20/10s, with N at least 1", r.String())
			}
			return nil
		},
	}
}

func intSetting(flag, env, help string, minimum int, field func(*Config) *int) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "int",
		parse: func(c *Config, raw string) error {
			n, err := strconv.Atoi(strings.TrimSpace(raw))
			if err != nil {
				return fmt.Errorf("%q is not a whole number; want %d or more", raw, minimum)
			}
			*field(c) = n
			return nil
		},
		show: func(c *Config) string { return strconv.Itoa(*field(c)) },
		check: func(c *Config) error {
			if n := *field(c); n < minimum {
				return fmt.Errorf("%d is too few; want a whole number, %d or more", n, minimum)
			}
			return nil
		},
	}
}

func durationSetting(flag, env, help string, field func(*Config) *time.Duration) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "duration",
		parse: func(c *Config, raw string) error {
			d, err := time.ParseDuration(strings.TrimSpace(raw))
			if err != nil {
				return fmt.Errorf("%q is not a duration; write a number and a unit such as 3s, 15m or 168h", raw)
			}
			*field(c) = d
			return nil
		},
		show: func(c *Config) string { return shortDuration(*field(c)) },
		check: func(c *Config) error {
			if d := *field(c); d <= 0 {
				return fmt.Errorf("%s is not a positive duration; write a number and a unit such as 3s, 15m or 168h", shortDuration(d))
			}
			return nil
		},
	}
}

func boolSetting(flag, env, help string, field func(*Config) *bool) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: help},
		typ:     "bool",
		parse: func(c *Config, raw string) error {
			v, err := strconv.ParseBool(strings.TrimSpace(raw))
			if err != nil {
				return fmt.Errorf("%q is not true or false", raw)
			}
			*field(c) = v
			return nil
		},
		show: func(c *Config) string { return strconv.FormatBool(*field(c)) },
	}
}

func enumSetting(flag, env, what string, allowed []string, field func(*Config) *string) *setting {
	return &setting{
		Setting: Setting{Flag: flag, Env: env, Help: orList(allowed)},
		typ:     "string",
		parse: func(c *Config, raw string) error {
			*field(c) = strings.ToLower(strings.TrimSpace(raw))
			return nil
		},
		show: func(c *Config) string { return *field(c) },
		check: func(c *Config) error {
			if v := *field(c); !slices.Contains(allowed, strings.ToLower(v)) {
				return fmt.Errorf("%q is not a %s; want %s", v, what, orList(allowed))
			}
			return nil
		},
	}
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// shortDuration writes 15m and 168h rather than 15m0s and 168h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func checkHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL such as https://example.com", v)
	}
	return nil
}

// checkRedisURL never echoes the URL or net/url's error text, either of which can hold the
// password.
func checkRedisURL(u SecretURL) error {
	if u == "" {
		return nil
	}
	const want = "write redis://[user:password@]host:port/db (one node, or a Cluster node), rediss://... for TLS, " +
		"redis://host:port?addr=host2:port2 for a Cluster, redis://sentinel:26379?master_name=NAME&addr=sentinel2:26379 for Sentinel, or unix:///path"
	_, err := redisconn.Parse(u.Reveal())
	if err == nil {
		return nil
	}
	if _, isURLErr := errors.AsType[*url.Error](err); isURLErr {
		return errors.New("is not a valid URL (the value is not shown); " + want)
	}
	// go-redis's own messages name the scheme, path or option at fault, not the password.
	return fmt.Errorf("%s is not a Redis URL (%s); %s", u, strings.TrimPrefix(err.Error(), "redis: "), want)
}

func checkArchive(v string) error {
	const want = "want a directory or s3://bucket/prefix"
	if v == "" {
		return errors.New("is empty; " + want)
	}
	scheme, rest, found := strings.Cut(v, "://")
	if !found {
		return nil
	}
	if scheme != "s3" {
		return fmt.Errorf("%q: %s:// is not supported; %s", v, scheme, want)
	}
	if bucket, _, _ := strings.Cut(rest, "/"); bucket == "" {
		return fmt.Errorf("%q names no bucket; %s", v, want)
	}
	return nil
}

func checkListen(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err == nil {
		if n, perr := strconv.Atoi(port); perr == nil && n >= 0 && n <= 65535 {
			return nil
		}
	}
	return fmt.Errorf("%q is not host:port such as 127.0.0.1:8080 or :8080", v)
}

// parsePrices reads "model=credits" entries separated by commas; an empty string is no prices.
// Whether the models are known and the prices sensible is checkPrices' business, so that a
// Config built in code is held to the same rules.
func parsePrices(c *Config, raw string) error {
	prices := map[string]float64{}
	var problems []error
	for entry := range strings.SplitSeq(raw, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		model, credits, ok := strings.Cut(entry, "=")
		model, credits = strings.TrimSpace(model), strings.TrimSpace(credits)
		if !ok || model == "" {
			problems = append(problems, fmt.Errorf("%q is not model=credits, such as flux-kontext-pro=5", entry))
			continue
		}
		v, err := strconv.ParseFloat(credits, 64)
		if err != nil {
			problems = append(problems, fmt.Errorf("%q: %q is not a number of credits", entry, credits))
			continue
		}
		if _, dup := prices[model]; dup {
			problems = append(problems, fmt.Errorf("%s is priced twice", model))
			continue
		}
		prices[model] = v
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	c.Prices = prices
	return nil
}

func formatPrices(prices map[string]float64) string {
	keys := sortedKeys(prices)
	parts := make([]string, len(keys))
	for i, m := range keys {
		parts[i] = m + "=" + strconv.FormatFloat(prices[m], 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

func checkPrices(prices map[string]float64) error {
	var problems []error
	for _, m := range sortedKeys(prices) {
		if !slices.Contains(models, m) {
			problems = append(problems, fmt.Errorf("unknown model %q; the models are %s", m, orList(models)))
			continue
		}
		if v := prices[m]; v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			problems = append(problems, fmt.Errorf("%s=%v: want a number of credits, 0 or more", m, v))
		}
	}
	return errors.Join(problems...)
}

func sortedKeys(m map[string]float64) []string {
	return slices.Sorted(maps.Keys(m))
}
