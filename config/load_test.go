package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/ratelimit"
)

// problems flattens the error Load or Validate returns into one message per problem.
func problems(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, problems(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// load parses args into a fresh FlagSet, as a subcommand would, and loads from env.
func load(t *testing.T, args []string, env map[string]string) (config.Config, []string, error) {
	t.Helper()
	fs := pflag.NewFlagSet("kontextq", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	cfg, err := config.Load(fs, func(k string) string { return env[k] })
	return cfg, fs.Args(), err
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kontextq.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultIsValid(t *testing.T) {
	if err := config.Default().Validate(); err != nil {
		t.Fatalf("Default() is invalid:\n%v", err)
	}
	cfg, _, err := load(t, nil, nil)
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	if got, want := cfg.String(), config.Default().String(); got != want {
		t.Errorf("Load with nothing set gave\n%s\nwant the defaults\n%s", got, want)
	}
}

// TestPrecedence checks flag > environment > file > default for one setting of every kind, in
// every combination of the sources that set it.
func TestPrecedence(t *testing.T) {
	kinds := []struct {
		flag, env string
		// values the file, the environment and the flag give; file is YAML text
		file, envValue, flagValue string
		get                       func(config.Config) any
		fileWant, envWant         any
		flagWant, defaultWant     any
	}{
		{
			flag: "rate", env: "KONTEXTQ_RATE", file: "30/1m", envValue: "5/1s", flagValue: "7/2s",
			get:      func(c config.Config) any { return c.Rate },
			fileWant: ratelimit.Rate{Events: 30, Per: time.Minute}, envWant: ratelimit.Rate{Events: 5, Per: time.Second},
			flagWant: ratelimit.Rate{Events: 7, Per: 2 * time.Second}, defaultWant: ratelimit.Rate{Events: 20, Per: 10 * time.Second},
		},
		{
			flag: "submit-workers", env: "KONTEXTQ_SUBMIT_WORKERS", file: "11", envValue: "12", flagValue: "13",
			get:      func(c config.Config) any { return c.SubmitWorkers },
			fileWant: 11, envWant: 12, flagWant: 13, defaultWant: 4,
		},
		{
			flag: "poll-timeout", env: "KONTEXTQ_POLL_TIMEOUT", file: "20m", envValue: "30m", flagValue: "1h",
			get:      func(c config.Config) any { return c.PollTimeout },
			fileWant: 20 * time.Minute, envWant: 30 * time.Minute, flagWant: time.Hour, defaultWant: 15 * time.Minute,
		},
		{
			flag: "kie-base-url", env: "KIE_BASE_URL", file: "http://file.test", envValue: "http://env.test", flagValue: "http://flag.test",
			get:      func(c config.Config) any { return c.KieBaseURL },
			fileWant: "http://file.test", envWant: "http://env.test", flagWant: "http://flag.test", defaultWant: "https://api.kie.ai",
		},
		{
			flag: "kie-api-key", env: "KIE_API_KEY", file: "file-key", envValue: "env-key", flagValue: "flag-key",
			get:      func(c config.Config) any { return c.KieAPIKey.Reveal() },
			fileWant: "file-key", envWant: "env-key", flagWant: "flag-key", defaultWant: "",
		},
		{
			flag: "redis-url", env: "REDIS_URL", file: "redis://file:6379/1", envValue: "redis://env:6379/2", flagValue: "redis://flag:6379/3",
			get:      func(c config.Config) any { return c.RedisURL.Reveal() },
			fileWant: "redis://file:6379/1", envWant: "redis://env:6379/2", flagWant: "redis://flag:6379/3", defaultWant: "",
		},
		{
			flag: "log-level", env: "KONTEXTQ_LOG_LEVEL", file: "debug", envValue: "warn", flagValue: "error",
			get:      func(c config.Config) any { return c.LogLevel },
			fileWant: "debug", envWant: "warn", flagWant: "error", defaultWant: "info",
		},
		{
			flag: "price", env: "KONTEXTQ_PRICES", file: "flux-kontext-pro=1", envValue: "flux-kontext-pro=2", flagValue: "flux-kontext-max=3",
			get: func(c config.Config) any { return c.Prices },
			// A source replaces the whole table, so a model priced only below is not kept.
			fileWant: map[string]float64{"flux-kontext-pro": 1}, envWant: map[string]float64{"flux-kontext-pro": 2},
			flagWant: map[string]float64{"flux-kontext-max": 3}, defaultWant: map[string]float64(nil),
		},
	}
	for _, k := range kinds {
		for mask := range 8 {
			inFile, inEnv, inFlag := mask&1 != 0, mask&2 != 0, mask&4 != 0
			name := k.flag
			want := k.defaultWant
			var args []string
			env := map[string]string{}
			for _, layer := range []struct {
				on   bool
				name string
				set  func()
				want any
			}{
				{inFile, "file", func() { args = append(args, "--config", writeFile(t, k.flag+": "+k.file+"\n")) }, k.fileWant},
				{inEnv, "env", func() { env[k.env] = k.envValue }, k.envWant},
				{inFlag, "flag", func() { args = append(args, "--"+k.flag, k.flagValue) }, k.flagWant},
			} {
				if layer.on {
					name += "+" + layer.name
					layer.set()
					want = layer.want
				}
			}
			t.Run(name, func(t *testing.T) {
				cfg, _, err := load(t, args, env)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got := k.get(cfg); !equal(got, want) {
					t.Errorf("%s = %v, want %v", k.flag, k.get(cfg), want)
				}
			})
		}
	}
}

func equal(a, b any) bool {
	am, aok := a.(map[string]float64)
	bm, bok := b.(map[string]float64)
	if aok && bok {
		if len(am) != len(bm) {
			return false
		}
		for k, v := range am {
			if w, ok := bm[k]; !ok || w != v {
				return false
			}
		}
		return true
	}
	return a == b
}

// A bad value that a higher source overrides never takes effect, so it is not an error.
func TestOverriddenBadValueIsIgnored(t *testing.T) {
	path := writeFile(t, "rate: twenty\n")
	cfg, _, err := load(t, []string{"--config", path, "--rate", "5/1s"}, map[string]string{"KONTEXTQ_RATE": "lots"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Rate != (ratelimit.Rate{Events: 5, Per: time.Second}) {
		t.Errorf("rate = %v, want 5/1s", cfg.Rate)
	}
}

func TestLoadReportsEveryProblemNamingItsSource(t *testing.T) {
	path := writeFile(t, strings.Join([]string{
		"archive: ./images",
		"poll-interval: soon",
		"namespace: Prod",
	}, "\n"))
	env := map[string]string{
		"KONTEXTQ_RATE":           "20 per 10s",
		"KONTEXTQ_SUBMIT_WORKERS": "0",
		"KONTEXTQ_LOG_FORMAT":     "xml",
	}
	args := []string{"--config", path, "--public-url", "kie.example.com/callbacks", "--price", "flux-kontext-ultra=3"}
	_, _, err := load(t, args, env)
	got := problems(err)
	want := []string{
		path + `:2: poll-interval: "soon" is not a duration; write a number and a unit such as 3s, 15m or 168h`,
		path + `:3: namespace: "Prod" is not a namespace; want 1 to 32 of a-z, 0-9, _ and -`,
		`KONTEXTQ_RATE: "20 per 10s" is not a rate; write N/DURATION such as 20/10s`,
		`KONTEXTQ_SUBMIT_WORKERS: 0 is too few; want a whole number, 1 or more`,
		`KONTEXTQ_LOG_FORMAT: "xml" is not a log format; want text or json`,
		`--public-url: "kie.example.com/callbacks" is not an absolute http(s) URL such as https://example.com`,
		`--price: unknown model "flux-kontext-ultra"; the models are flux-kontext-pro or flux-kontext-max`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidateNamesSettingAndAcceptedValues(t *testing.T) {
	c := config.Default()
	c.Rate = ratelimit.Rate{}
	c.PollWorkers = 0
	c.FirstPoll = -time.Second
	c.KieUploadURL = "ftp://upload.example.com"
	c.LogLevel = "verbose"
	got := problems(c.Validate())
	want := []string{
		`--kie-upload-url (KIE_UPLOAD_URL): "ftp://upload.example.com" is not an absolute http(s) URL such as https://example.com`,
		`--rate (KONTEXTQ_RATE): "" is not a rate; write N/DURATION such as 20/10s, with N at least 1`,
		`--poll-workers (KONTEXTQ_POLL_WORKERS): 0 is too few; want a whole number, 1 or more`,
		`--first-poll (KONTEXTQ_FIRST_POLL): -1s is not a positive duration; write a number and a unit such as 3s, 15m or 168h`,
		`--log-level (KONTEXTQ_LOG_LEVEL): "verbose" is not a log level; want debug, info, warn or error`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestValidate covers each rule: one change to the defaults, and the one problem it makes
// (or none).
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*config.Config)
		want   string // a fragment of the only problem; "" for a valid config
	}{
		{"s3 archive", func(c *config.Config) { c.Archive = "s3://bucket/images" }, ""},
		{"s3 archive without prefix", func(c *config.Config) { c.Archive = "s3://bucket" }, ""},
		{"s3 archive without bucket", func(c *config.Config) { c.Archive = "s3:///images" }, "--archive (KONTEXTQ_ARCHIVE): \"s3:///images\" names no bucket"},
		{"other archive scheme", func(c *config.Config) { c.Archive = "gs://bucket" }, "gs:// is not supported; want a directory or s3://bucket/prefix"},
		{"empty archive", func(c *config.Config) { c.Archive = "" }, "--archive (KONTEXTQ_ARCHIVE): is empty"},
		{"no retries", func(c *config.Config) { c.GenerationRetries = 0 }, ""},
		{"negative retries", func(c *config.Config) { c.GenerationRetries = -1 }, "--generation-retries (KONTEXTQ_GENERATION_RETRIES): -1 is too few; want a whole number, 0 or more"},
		{"zero archive workers", func(c *config.Config) { c.ArchiveWorkers = 0 }, "--archive-workers (KONTEXTQ_ARCHIVE_WORKERS)"},
		{"zero retention", func(c *config.Config) { c.Retention = 0 }, "--retention (KONTEXTQ_RETENTION): 0s is not a positive duration"},
		{"zero expiry margin", func(c *config.Config) { c.ExpiryMargin = 0 }, "--expiry-margin (KONTEXTQ_EXPIRY_MARGIN)"},
		{"zero poll rate period", func(c *config.Config) { c.PollRate.Per = 0 }, "--poll-rate (KONTEXTQ_POLL_RATE)"},
		{"relative base URL", func(c *config.Config) { c.KieBaseURL = "/api" }, "--kie-base-url (KIE_BASE_URL)"},
		{"empty base URL", func(c *config.Config) { c.KieBaseURL = "" }, "--kie-base-url (KIE_BASE_URL)"},
		{"http public URL", func(c *config.Config) { c.PublicURL = "http://10.0.0.5:8080" }, ""},
		{"public URL without scheme", func(c *config.Config) { c.PublicURL = "example.com" }, "--public-url (KONTEXTQ_PUBLIC_URL)"},
		{"redis URL", func(c *config.Config) { c.RedisURL = "redis://:pw@127.0.0.1:6379/2" }, ""},
		{"rediss URL", func(c *config.Config) { c.RedisURL = "rediss://user:pw@redis.example.com:6380/0" }, ""},
		{"unix redis URL", func(c *config.Config) { c.RedisURL = "unix:///run/redis.sock?db=1" }, ""},
		{"cluster redis URL", func(c *config.Config) { c.RedisURL = "redis://:pw@10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379" }, ""},
		{"sentinel redis URL", func(c *config.Config) {
			c.RedisURL = "redis://10.0.0.1:26379?master_name=mymaster&addr=10.0.0.2:26379&password=pw"
		}, ""},
		{"sentinel URL without a name", func(c *config.Config) { c.RedisURL = "redis://10.0.0.1:26379?master_name=" }, "master_name is empty"},
		{"cluster URL with a bad address", func(c *config.Config) { c.RedisURL = "redis://10.0.0.1:6379?addr=10.0.0.2" }, "addr"},
		{"redis URL with unknown option", func(c *config.Config) { c.RedisURL = "redis://10.0.0.1:6379?mastername=x" }, "unexpected option: mastername"},
		{"redis URL with http scheme", func(c *config.Config) { c.RedisURL = "http://127.0.0.1:6379" }, "--redis-url (REDIS_URL): http://127.0.0.1:6379 is not a Redis URL (invalid URL scheme: http)"},
		{"redis URL with bad database", func(c *config.Config) { c.RedisURL = "redis://127.0.0.1:6379/zero" }, "invalid database number"},
		{"namespace with underscore and dash", func(c *config.Config) { c.Namespace = "prod_eu-1" }, ""},
		{"namespace with colon", func(c *config.Config) { c.Namespace = "prod:eu" }, "--namespace (KONTEXTQ_NAMESPACE): \"prod:eu\" is not a namespace"},
		{"namespace too long", func(c *config.Config) { c.Namespace = strings.Repeat("a", 33) }, "--namespace (KONTEXTQ_NAMESPACE)"},
		{"empty namespace", func(c *config.Config) { c.Namespace = "" }, "--namespace (KONTEXTQ_NAMESPACE)"},
		{"listen on all interfaces", func(c *config.Config) { c.Listen = ":9090" }, ""},
		{"listen without port", func(c *config.Config) { c.Listen = "localhost" }, "--listen (KONTEXTQ_LISTEN): \"localhost\" is not host:port"},
		{"listen with bad port", func(c *config.Config) { c.Listen = "localhost:http" }, "--listen (KONTEXTQ_LISTEN)"},
		{"upper-case log level", func(c *config.Config) { c.LogLevel = "DEBUG" }, ""},
		{"log format", func(c *config.Config) { c.LogFormat = "logfmt" }, "--log-format (KONTEXTQ_LOG_FORMAT): \"logfmt\" is not a log format; want text or json"},
		{"prices", func(c *config.Config) { c.Prices = map[string]float64{"flux-kontext-pro": 5, "flux-kontext-max": 0} }, ""},
		{"negative price", func(c *config.Config) { c.Prices = map[string]float64{"flux-kontext-max": -1} }, "--price (KONTEXTQ_PRICES): flux-kontext-max=-1: want a number of credits, 0 or more"},
		{"unknown model", func(c *config.Config) { c.Prices = map[string]float64{"flux-dev": 1} }, "--price (KONTEXTQ_PRICES): unknown model \"flux-dev\""},
		{"key with newline", func(c *config.Config) { c.KieAPIKey = "abc\n" }, "--kie-api-key (KIE_API_KEY): contains a space or control character"},
		{"token with space", func(c *config.Config) { c.APIToken = "a b" }, "--api-token (KONTEXTQ_API_TOKEN)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			tt.change(&c)
			got := problems(c.Validate())
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("valid config reported %q", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

// TestParseErrors covers values that are not even of the right type, given in the environment.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		env, value, want string
	}{
		{"KONTEXTQ_RATE", "20 per 10s", `KONTEXTQ_RATE: "20 per 10s" is not a rate; write N/DURATION such as 20/10s`},
		{"KONTEXTQ_POLL_RATE", "0/1s", `KONTEXTQ_POLL_RATE: "0/1s" is not a rate`},
		{"KONTEXTQ_POLL_WORKERS", "eight", `KONTEXTQ_POLL_WORKERS: "eight" is not a whole number; want 1 or more`},
		{"KONTEXTQ_GENERATION_RETRIES", "2.5", `KONTEXTQ_GENERATION_RETRIES: "2.5" is not a whole number; want 0 or more`},
		{"KONTEXTQ_RETENTION", "7d", `KONTEXTQ_RETENTION: "7d" is not a duration`},
		{"KONTEXTQ_PRICES", "flux-kontext-pro", `KONTEXTQ_PRICES: "flux-kontext-pro" is not model=credits, such as flux-kontext-pro=5`},
		{"KONTEXTQ_PRICES", "flux-kontext-pro=five", `KONTEXTQ_PRICES: "flux-kontext-pro=five": "five" is not a number of credits`},
		{"KONTEXTQ_PRICES", "flux-kontext-pro=1,flux-kontext-pro=2", `KONTEXTQ_PRICES: flux-kontext-pro is priced twice`},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			_, _, err := load(t, nil, map[string]string{tt.env: tt.value})
			got := problems(err)
			if len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
				t.Errorf("problems %q, want one starting %q", got, tt.want)
			}
		})
	}
}

func TestPricesFromEveryForm(t *testing.T) {
	want := map[string]float64{"flux-kontext-pro": 5, "flux-kontext-max": 10.5}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
	}{
		{name: "repeated flag", args: []string{"--price", "flux-kontext-pro=5", "--price", "flux-kontext-max=10.5"}},
		{name: "comma list flag", args: []string{"--price", "flux-kontext-pro=5, flux-kontext-max=10.5"}},
		{name: "environment", env: map[string]string{"KONTEXTQ_PRICES": "flux-kontext-pro=5,flux-kontext-max=10.5"}},
		{name: "file mapping", file: "price:\n  flux-kontext-pro: 5\n  flux-kontext-max: 10.5\n"},
		{name: "file list", file: "price: [flux-kontext-pro=5, flux-kontext-max=10.5]\n"},
		{name: "file string", file: "price: flux-kontext-pro=5,flux-kontext-max=10.5\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			cfg, _, err := load(t, args, tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !equal(cfg.Prices, want) {
				t.Errorf("prices = %v, want %v", cfg.Prices, want)
			}
		})
	}
}

func TestFile(t *testing.T) {
	path := writeFile(t, strings.Join([]string{
		"# a deployment",
		"kie-base-url: http://127.0.0.1:9999",
		"submit-workers: 2",
		"first-poll: 5s",
		"public-url:", // null: explicitly none
		"archive: &dir /srv/images",
		"",
	}, "\n"))
	cfg, _, err := load(t, []string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.KieBaseURL != "http://127.0.0.1:9999" || cfg.SubmitWorkers != 2 || cfg.FirstPoll != 5*time.Second ||
		cfg.PublicURL != "" || cfg.Archive != "/srv/images" || cfg.ConfigFile != path {
		t.Errorf("loaded\n%s", cfg)
	}

	empty := writeFile(t, "# nothing yet\n")
	if _, _, err := load(t, nil, map[string]string{"KONTEXTQ_CONFIG": empty}); err != nil {
		t.Errorf("a file with only comments: %v", err)
	}
}

func TestFileProblems(t *testing.T) {
	tests := []struct {
		name, content string
		want          []string // after "<path>"
	}{
		{
			name:    "unknown keys",
			content: "rate: 20/10s\nratee: 10/1s\nKIE_API_KEY: sk-123\npollInterval: 3s\nbanana: 1\n",
			want: []string{
				`:2: unknown setting "ratee"; did you mean "rate"?`,
				`:3: unknown setting "KIE_API_KEY"; did you mean "kie-api-key"?`,
				`:4: unknown setting "pollInterval"; did you mean "poll-interval"?`,
				`:5: unknown setting "banana"`,
			},
		},
		{
			name:    "repeated key",
			content: "rate: 20/10s\nlisten: :80\nrate: 5/1s\n",
			want:    []string{`:3: rate: set twice (first on line 1)`},
		},
		{
			name:    "list for a single value",
			content: "archive: [a, b]\n",
			want:    []string{`:1: archive: want a single value, not a list or mapping`},
		},
		{
			name:    "config inside the file",
			content: "config: other.yaml\n",
			want:    []string{`:1: config: a config file cannot name another; use --config or KONTEXTQ_CONFIG`},
		},
		{
			name:    "not a mapping",
			content: "- rate: 20/10s\n",
			want:    []string{`:1: want a mapping of setting: value, such as rate: 20/10s`},
		},
		{
			name:    "not YAML",
			content: "rate: [20/10s\n",
			want:    []string{`: not valid YAML: `},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content)
			_, _, err := load(t, []string{"--config", path}, nil)
			got := problems(err)
			if len(got) != len(tt.want) {
				t.Fatalf("problems:\n%s\nwant %d", strings.Join(got, "\n"), len(tt.want))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], path+tt.want[i]) {
					t.Errorf("problem %q, want it to start %q", got[i], path+tt.want[i])
				}
			}
		})
	}
}

func TestMissingFileNamesWhereItWasNamed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--config", missing}, want: "--config: cannot read the config file: open " + missing},
		{env: map[string]string{"KONTEXTQ_CONFIG": missing}, want: "KONTEXTQ_CONFIG: cannot read the config file: open " + missing},
	}
	for _, tt := range tests {
		_, _, err := load(t, tt.args, tt.env)
		if got := problems(err); len(got) != 1 || !strings.HasPrefix(got[0], tt.want) {
			t.Errorf("problems %q, want one starting %q", got, tt.want)
		}
	}
}

// Subcommands take positional arguments with flags before or after them: kontextq run FILE --rate 5/1s.
func TestInterspersedFlags(t *testing.T) {
	cfg, args, err := load(t, []string{"prompts.jsonl", "--rate", "5/1s", "--price=flux-kontext-pro=2", "more.csv", "--poll-workers=3"}, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !slices.Equal(args, []string{"prompts.jsonl", "more.csv"}) {
		t.Errorf("positional args = %q", args)
	}
	if cfg.Rate != (ratelimit.Rate{Events: 5, Per: time.Second}) || cfg.PollWorkers != 3 || cfg.Prices["flux-kontext-pro"] != 2 {
		t.Errorf("flags after positional args were not applied:\n%s", cfg)
	}
}

// A FlagSet without our flags (a subcommand that takes none) still loads the environment.
func TestLoadWithoutFlags(t *testing.T) {
	cfg, err := config.Load(nil, func(k string) string {
		return map[string]string{"KONTEXTQ_NAMESPACE": "staging"}[k]
	})
	if err != nil || cfg.Namespace != "staging" {
		t.Errorf("Load(nil, env) = %q, %v", cfg.Namespace, err)
	}
	cfg, err = config.Load(pflag.NewFlagSet("empty", pflag.ContinueOnError), nil)
	if err != nil || cfg.Namespace != "kontextq" {
		t.Errorf("Load(empty, nil) = %q, %v", cfg.Namespace, err)
	}
}

func TestRequireKieKey(t *testing.T) {
	c := config.Default()
	err := c.RequireKieKey()
	if !errors.Is(err, config.ErrNoKieKey) || !strings.Contains(err.Error(), "KIE_API_KEY") {
		t.Errorf("without a key: %v, want an error naming KIE_API_KEY", err)
	}
	c.KieAPIKey = "k"
	if err := c.RequireKieKey(); err != nil {
		t.Errorf("with a key: %v", err)
	}
}
