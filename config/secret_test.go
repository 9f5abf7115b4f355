package config_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/kontextq/kontextq/config"
)

const (
	apiKey    = "kie-sk-4f1a9c"
	hmacKey   = "hmac-77be02"
	apiToken  = "tok-d41d8c"
	redisPass = "redis-pw-9e107d"
)

// leaks returns the secrets that appear in out, in clear or hex-encoded.
func leaks(out string) []string {
	var found []string
	for _, s := range []string{apiKey, hmacKey, apiToken, redisPass} {
		if strings.Contains(out, s) || strings.Contains(out, hex.EncodeToString([]byte(s))) {
			found = append(found, s)
		}
	}
	return found
}

func secretConfig() config.Config {
	c := config.Default()
	c.KieAPIKey = apiKey
	c.WebhookHMACKey = hmacKey
	c.APIToken = apiToken
	c.RedisURL = config.SecretURL("redis://default:" + redisPass + "@redis.internal:6379/3")
	return c
}

func TestSecretsAreNeverPrinted(t *testing.T) {
	cfg := secretConfig()
	var slogOut bytes.Buffer
	slog.New(slog.NewJSONHandler(&slogOut, nil)).Info("starting", "config", cfg, "key", cfg.KieAPIKey, "redis", cfg.RedisURL)
	var textOut bytes.Buffer
	slog.New(slog.NewTextHandler(&textOut, nil)).Info("starting", "config", cfg, "token", cfg.APIToken)
	jsonOut, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	jsonPtr, err := json.Marshal(&struct{ C *config.Config }{&cfg})
	if err != nil {
		t.Fatal(err)
	}
	yamlOut, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"fmt config":     fmt.Sprintf("%v %+v %#v %s %q %x", cfg, cfg, cfg, cfg.String(), cfg, cfg),
		"fmt pointer":    fmt.Sprintf("%v %+v %#v", &cfg, &cfg, &cfg),
		"fmt fields":     fmt.Sprintf("%v %+v %#v %s %q %x %X %d %10s", cfg.KieAPIKey, cfg.WebhookHMACKey, cfg.APIToken, cfg.RedisURL, cfg.KieAPIKey, cfg.APIToken, cfg.RedisURL, cfg.WebhookHMACKey, cfg.KieAPIKey),
		"fmt in struct":  fmt.Sprintf("%+v %#v", struct{ K config.Secret }{cfg.KieAPIKey}, []config.SecretURL{cfg.RedisURL}),
		"Redacted":       fmt.Sprint(cfg.Redacted()),
		"json":           string(jsonOut) + string(jsonPtr),
		"slog json":      slogOut.String(),
		"slog text":      textOut.String(),
		"yaml":           string(yamlOut),
		"text marshaler": mustText(t, cfg.KieAPIKey) + mustText(t, cfg.RedisURL),
	}
	for name, out := range outputs {
		if found := leaks(out); len(found) > 0 {
			t.Errorf("%s shows %q:\n%s", name, found, out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s does not say a secret is set:\n%s", name, out)
		}
	}
	// Redaction keeps what is not secret, so a log still says which Redis was meant.
	if got := cfg.RedisURL.String(); got != "redis://default:[redacted]@redis.internal:6379/3" {
		t.Errorf("redis URL shown as %q", got)
	}
	for in, want := range map[string]string{
		"redis://s:sp@10.0.0.1:26379?master_name=m&password=pw&addr=10.0.0.2:26379": "redis://s:[redacted]@10.0.0.1:26379?addr=10.0.0.2%3A26379&master_name=m&password=[redacted]",
		"redis://10.0.0.1:26379?sentinel_password=sp&master_name=m":                 "redis://10.0.0.1:26379?master_name=m&password=[redacted]",
		"redis://10.0.0.1:6379?addr=10.0.0.2:6379":                                  "redis://10.0.0.1:6379?addr=10.0.0.2:6379",
	} {
		if got := config.SecretURL(in).String(); got != want {
			t.Errorf("%s shown as %q, want %q", in, got, want)
		}
	}
	if got := cfg.KieAPIKey.Reveal(); got != apiKey {
		t.Errorf("Reveal() = %q", got)
	}
}

func mustText(t *testing.T, v interface{ MarshalText() ([]byte, error) }) string {
	t.Helper()
	b, err := v.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Secrets given as flags are not echoed by the FlagSet either (flag dumps, pflag's messages).
func TestSecretFlagsAreNotEchoed(t *testing.T) {
	fs := pflag.NewFlagSet("kontextq", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	err := fs.Parse([]string{
		"--kie-api-key", apiKey, "--webhook-hmac-key", hmacKey, "--api-token", apiToken,
		"--redis-url", "redis://:" + redisPass + "@127.0.0.1:6379/0",
	})
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	fs.VisitAll(func(f *pflag.Flag) { fmt.Fprintf(&dump, "%s=%s %v\n", f.Name, f.Value, f.Value) })
	dump.WriteString(fs.FlagUsages())
	if found := leaks(dump.String()); len(found) > 0 {
		t.Errorf("flag set shows %q:\n%s", found, dump.String())
	}
	cfg, err := config.Load(fs, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.KieAPIKey.Reveal() != apiKey || cfg.APIToken.Reveal() != apiToken || cfg.WebhookHMACKey.Reveal() != hmacKey ||
		!strings.Contains(cfg.RedisURL.Reveal(), redisPass) {
		t.Errorf("secret flags were not loaded")
	}
}

// Bad secret values are reported without the value.
func TestLoadErrorsDoNotShowSecrets(t *testing.T) {
	envs := []map[string]string{
		{
			"KIE_API_KEY":          apiKey + "\n",
			"KIE_WEBHOOK_HMAC_KEY": " " + hmacKey,
			"KONTEXTQ_API_TOKEN":   apiToken + "\t",
			"REDIS_URL":            "redis://:" + redisPass + "@127.0.0.1:port/0",
		},
		{"REDIS_URL": "redis://:" + redisPass + "@127.0.0.1:6379/db"},
		{"REDIS_URL": "redis://:" + redisPass + "%zz@127.0.0.1:6379/0"},
		{"REDIS_URL": "http://:" + redisPass + "@127.0.0.1:6379/0"},
		{"REDIS_URL": "redis://:" + redisPass + "@127.0.0.1:6379/0?pool_size=many"},
	}
	for _, env := range envs {
		_, _, err := load(t, nil, env)
		if err == nil {
			t.Errorf("Load(%v) accepted bad values", env)
			continue
		}
		if found := leaks(err.Error()); len(found) > 0 {
			t.Errorf("Load error shows %q:\n%v", found, err)
		}
		for name := range env {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Load error does not name %s:\n%v", name, err)
			}
		}
	}
}

func TestSecretFormatting(t *testing.T) {
	tests := []struct {
		name  string
		value fmt.Stringer
		want  string
	}{
		{"unset secret", config.Secret(""), ""},
		{"secret", config.Secret("x"), "[redacted]"},
		{"unset URL", config.SecretURL(""), ""},
		{"URL without user info", config.SecretURL("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0"},
		{"URL with user only", config.SecretURL("redis://app@127.0.0.1:6379/0"), "redis://app@127.0.0.1:6379/0"},
		{"URL with password only", config.SecretURL("redis://:pw@127.0.0.1:6379/0"), "redis://:[redacted]@127.0.0.1:6379/0"},
		{"URL with user and password", config.SecretURL("rediss://app:pw@h:6380/1?dial_timeout=3s"), "rediss://app:[redacted]@h:6380/1?dial_timeout=3s"},
		{"URL that does not parse", config.SecretURL("redis://:pw@h:port"), "[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.value.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := fmt.Sprintf("%v", tt.value); got != tt.want {
				t.Errorf("%%v = %q, want %q", got, tt.want)
			}
			if got := fmt.Sprintf("%#v", tt.value); got != fmt.Sprintf("%q", tt.want) {
				t.Errorf("%%#v = %s, want %q", got, tt.want)
			}
			j, err := json.Marshal(tt.value)
			if want, _ := json.Marshal(tt.want); err != nil || string(j) != string(want) {
				t.Errorf("json = %s, %v; want %s", j, err, want)
			}
		})
	}
}
