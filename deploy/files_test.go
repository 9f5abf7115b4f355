package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The scrape jobs the shipped rules and dashboard select (deploy/prometheus/prometheus.yml).
const (
	serveJob  = "kontextq"
	workerJob = "kontextq-worker"
)

// query is one PromQL expression shipped in a deployment file, and where.
type query struct {
	where string
	expr  string
}

// readYAML decodes a YAML file into v, refusing unknown fields when v is a struct.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// alertRules are the rules of alerts.yaml, as Prometheus reads them.
type alertRules struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T) alertRules {
	var r alertRules
	readYAML(t, "prometheus/alerts.yaml", &r)
	if len(r.Groups) == 0 {
		t.Fatal("prometheus/alerts.yaml has no rule group")
	}
	return r
}

// shippedQueries returns every PromQL expression of the alert rules, the dashboard (panels and
// variables) and the KEDA trigger.
func shippedQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"prometheus/alerts.yaml: " + r.Alert + r.Record, r.Expr})
		}
	}

	b, err := os.ReadFile("grafana/dashboards/kontextq.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/dashboards/kontextq.json: %v", err)
	}
	panelExprs(dash["panels"], "", &qs)
	vars, _ := dash["templating"].(map[string]any)
	list, _ := vars["list"].([]any)
	for _, v := range list {
		v := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		where := fmt.Sprintf("grafana/dashboards/kontextq.json: variable %v", v["name"])
		switch q := v["query"].(type) {
		case string:
			qs = append(qs, query{where, q})
		case map[string]any:
			qs = append(qs, query{where, fmt.Sprint(q["query"])})
		default:
			t.Errorf("%s: a query variable without a query", where)
		}
	}

	var so struct {
		Spec struct {
			Triggers []struct {
				Type     string            `yaml:"type"`
				Metadata map[string]string `yaml:"metadata"`
			} `yaml:"triggers"`
		} `yaml:"spec"`
	}
	b, err = os.ReadFile("k8s/components/keda/scaledobject.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &so); err != nil {
		t.Fatalf("k8s/components/keda/scaledobject.yaml: %v", err)
	}
	for _, tr := range so.Spec.Triggers {
		if tr.Type == "prometheus" {
			qs = append(qs, query{"k8s/components/keda/scaledobject.yaml", tr.Metadata["query"]})
		}
	}
	return qs
}

// panelExprs collects the targets' expressions of panels and of the panels inside rows.
func panelExprs(v any, where string, qs *[]query) {
	panels, _ := v.([]any)
	for _, p := range panels {
		p := p.(map[string]any)
		title := fmt.Sprint(p["title"])
		if targets, ok := p["targets"].([]any); ok {
			for _, tg := range targets {
				tg := tg.(map[string]any)
				if e, ok := tg["expr"].(string); ok {
					*qs = append(*qs, query{fmt.Sprintf("grafana/dashboards/kontextq.json: panel %q %v", title, tg["refId"]), e})
				}
			}
		}
		panelExprs(p["panels"], title, qs)
	}
}

// jobOf says which scrape job a selector reads, from its job matcher.
func jobOf(s selector) (string, bool) {
	for _, m := range strings.Split(s.matchers, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok || strings.TrimSpace(k) != "job" {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch v {
		case serveJob, "$job", "${job}":
			return serveJob, true
		case workerJob, "$worker_job", "${worker_job}":
			return workerJob, true
		}
		return v, true
	}
	return "", false
}

// tool finds a command the checks need. Absent, the test is skipped, except in CI: a CI run
// that skips the check proves nothing, so there it fails and says how to get the tool.
func tool(t *testing.T, name, how string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; CI requires it (%s)", name, how)
	}
	t.Skipf("%s is not installed (%s); skipping", name, how)
	return ""
}

// repoRoot is the module's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// wantedMetrics lists, per scrape job, the metrics the shipped queries read and where. Every
// query must read a metric and name its job: serve and the workers may export the same
// counters, so a query without a job would add the deployment's figure to each process's.
func wantedMetrics(t *testing.T) map[string]map[string][]string {
	t.Helper()
	want := map[string]map[string][]string{serveJob: {}, workerJob: {}} // job -> metric -> where
	for _, q := range shippedQueries(t) {
		sels := selectors(q.expr)
		if len(sels) == 0 {
			t.Errorf("%s: %q reads no metric", q.where, q.expr)
		}
		for _, s := range sels {
			if synthetic[s.name] {
				continue
			}
			job, ok := jobOf(s)
			if !ok {
				t.Errorf("%s: %s has no job matcher (want job=%q or job=%q)", q.where, s.name, serveJob, workerJob)
				continue
			}
			if want[job] == nil {
				t.Errorf("%s: %s reads job %q; the shipped scrape jobs are %q and %q", q.where, s.name, job, serveJob, workerJob)
				continue
			}
			want[job][s.name] = append(want[job][s.name], q.where)
		}
	}
	return want
}

// Metrics Prometheus adds to every target itself; no /metrics shows them.
var synthetic = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

func TestShippedQueriesNameTheirJob(t *testing.T) {
	want := wantedMetrics(t)
	if len(want[serveJob]) < 10 || len(want[workerJob]) == 0 {
		t.Errorf("the shipped queries read %d metrics of serve and %d of the workers; the reader of queries misses some", len(want[serveJob]), len(want[workerJob]))
	}
}
