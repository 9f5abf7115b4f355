package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const promtoolHow = "Debian's prometheus package provides it: apt-get install prometheus; .ci/run installs it"

// promtool runs promtool and fails the test with its output when it fails.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	p := tool(t, "promtool", promtoolHow)
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The alert rules are valid, and their unit tests (alerts_test.yaml) pass: each alert fires
// where an operator must act and stays quiet where nothing is wrong.
func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", "prometheus/alerts.yaml")
	promtool(t, "test", "rules", "prometheus/alerts_test.yaml")
}

// Every alert links to its section of docs/operations.md, which says what it means and what to do.
func TestAlertsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("prometheus/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			anchor := "docs/operations.md#" + strings.ToLower(r.Alert)
			if !strings.Contains(r.Annotations["description"], anchor) {
				t.Errorf("alert %s: its description does not point to %s", r.Alert, anchor)
			}
			if !strings.Contains(string(doc), "### "+r.Alert+"\n") {
				t.Errorf("alert %s: docs/operations.md has no section \"### %s\"", r.Alert, r.Alert)
			}
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s: prometheus/alerts_test.yaml never evaluates it", r.Alert)
			}
			if r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
		}
	}
}

// prometheus.yml is a valid configuration once its container paths (the rule file, the
// token secret, the target files) are where the compose file mounts them.
func TestPrometheusConfig(t *testing.T) {
	tool(t, "promtool", promtoolHow)
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, p := range []string{"etc/prometheus/targets", "run/secrets"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		"etc/prometheus/alerts.yaml":     rules,
		"run/secrets/kontextq_api_token": []byte("token\n"),
		"etc/prometheus/prometheus.yml":  []byte(strings.NewReplacer("/etc/prometheus/", dir+"/etc/prometheus/", "/run/secrets/", dir+"/run/secrets/").Replace(string(b))),
	} {
		if err := os.WriteFile(filepath.Join(dir, path), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	promtool(t, "check", "config", filepath.Join(dir, "etc/prometheus/prometheus.yml"))
}
