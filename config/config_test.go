package config_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kontextq/kontextq/config"
)

func TestSettingsTable(t *testing.T) {
	settings := config.Settings()
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, s := range settings {
		if s.Flag == "" || s.Env == "" || s.Help == "" {
			t.Errorf("incomplete setting %+v", s)
		}
		if flags[s.Flag] || envs[s.Env] {
			t.Errorf("%s or %s is used twice", s.Flag, s.Env)
		}
		flags[s.Flag], envs[s.Env] = true, true
	}
	// The names users rely on (DESIGN.md) stay as they are.
	for _, env := range []string{"KIE_API_KEY", "KIE_BASE_URL", "KIE_UPLOAD_URL", "REDIS_URL", "KONTEXTQ_RATE", "KONTEXTQ_POLL_RATE"} {
		if !envs[env] {
			t.Errorf("no setting reads %s", env)
		}
	}
	if entries := config.Default().Redacted(); len(entries) != len(settings) {
		t.Errorf("Redacted() has %d entries, Settings() %d", len(entries), len(settings))
	}
}

// Each documented default, written back through its environment variable, gives Default():
// the table and Default() cannot drift apart.
func TestDocumentedDefaultsAreTheDefaults(t *testing.T) {
	env := map[string]string{}
	for _, s := range config.Settings() {
		env[s.Env] = s.Default
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := cfg.String(), config.Default().String(); got != want {
		t.Errorf("loading the documented defaults gave\n%s\nwant\n%s", got, want)
	}
	want := map[string]string{"rate": "20/10s", "poll-rate": "10/1s", "transfer-rate": "20/1s", "retention": "168h",
		"poll-timeout": "15m", "kie-base-url": "https://api.kie.ai", "redis-url": "", "namespace": "kontextq"}
	for _, s := range config.Settings() {
		if w, ok := want[s.Flag]; ok && s.Default != w {
			t.Errorf("default of %s = %q, want %q", s.Flag, s.Default, w)
		}
	}
}

func TestFlagHelpNamesEnvAndDefault(t *testing.T) {
	fs := pflag.NewFlagSet("kontextq", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	usage := fs.FlagUsages()
	for _, s := range config.Settings() {
		f := fs.Lookup(s.Flag)
		if f == nil {
			t.Errorf("no flag --%s", s.Flag)
			continue
		}
		if !strings.Contains(f.Usage, s.Env) {
			t.Errorf("help of --%s does not name %s: %q", s.Flag, s.Env, f.Usage)
		}
		if f.DefValue != s.Default {
			t.Errorf("--%s default %q, want %q", s.Flag, f.DefValue, s.Default)
		}
	}
	for _, line := range []string{"--rate rate", "(default 20/10s)", "--poll-timeout duration", "(default 15m)", "--price model=credits"} {
		if !strings.Contains(usage, line) {
			t.Errorf("help lacks %q:\n%s", line, usage)
		}
	}
	if !strings.Contains(fs.Lookup("kie-api-key").Usage, "ps") {
		t.Errorf("--kie-api-key help does not warn that ps shows it")
	}
}

func TestStringAndJSON(t *testing.T) {
	c := config.Default()
	c.KieAPIKey = "k"
	c.Prices = map[string]float64{"flux-kontext-pro": 5, "flux-kontext-max": 10}
	s := c.String()
	for _, line := range []string{
		"kie-api-key        = [redacted]\n",
		"rate               = 20/10s\n",
		"price              = flux-kontext-max=10,flux-kontext-pro=5\n",
		"api-token          =\n", // unset, and visibly so
	} {
		if !strings.Contains(s, line) {
			t.Errorf("String() lacks %q:\n%s", line, s)
		}
	}
	if lines := strings.Count(s, "\n"); lines != len(config.Settings()) {
		t.Errorf("String() has %d lines, want one per setting", lines)
	}

	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got["kie-api-key"] != "[redacted]" || got["poll-interval"] != "3s" || got["submit-workers"] != "4" || got["webhook-hmac-key"] != "" {
		t.Errorf("json = %s", b)
	}
	if !strings.HasPrefix(string(b), `{"kie-api-key":`) {
		t.Errorf("json is not in the order of Settings: %s", b)
	}
}
