package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kontextq/kontextq/worker"
)

// composeFile is the part of a compose file the checks read.
type composeFile struct {
	Services map[string]struct {
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Image           string            `yaml:"image"`
		Entrypoint      []string          `yaml:"entrypoint"`
		Command         []string          `yaml:"command"`
		Environment     map[string]string `yaml:"environment"`
		Volumes         []string          `yaml:"volumes"`
		Secrets         []string          `yaml:"secrets"`
		Ports           []string          `yaml:"ports"`
		StopGracePeriod string            `yaml:"stop_grace_period"`
		Healthcheck     *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Secrets map[string]struct {
		Environment string `yaml:"environment"`
		File        string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Through a generic value first, which resolves the anchors and merge keys ("<<: *env").
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for k := range raw {
		if strings.HasPrefix(k, "x-") {
			delete(raw, k)
		}
	}
	norm, err := yaml.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(norm, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(c.Services) == 0 {
		t.Fatalf("%s: no services", path)
	}
	return c
}

// checkServices checks what every compose file must get right: files it mounts or builds from
// exist, secrets it uses are declared, workers stop within their grace period and serve their
// metrics, and secret values come from the environment, never from the file.
func checkServices(t *testing.T, path string, c composeFile) {
	t.Helper()
	dir := filepath.Dir(path)
	for name, s := range c.Services {
		where := fmt.Sprintf("%s: service %s", path, name)
		if s.Build != nil {
			ctx := filepath.Join(dir, s.Build.Context)
			if _, err := os.Stat(filepath.Join(ctx, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", where, err)
			}
		}
		for _, v := range s.Volumes {
			src, _, ok := strings.Cut(v, ":")
			if !ok {
				t.Errorf("%s: volume %q has no target", where, v)
				continue
			}
			switch {
			case strings.HasPrefix(src, "."):
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: mounts %s: %v", where, src, err)
				}
			case strings.HasPrefix(src, "${"):
				// A variable chosen at deploy time; its default must be a declared volume.
				if m := regexp.MustCompile(`^\$\{[A-Z_]+:-([a-z-]+)\}$`).FindStringSubmatch(src); m != nil {
					if _, ok := c.Volumes[m[1]]; !ok {
						t.Errorf("%s: volume %q is not declared", where, m[1])
					}
				}
			default:
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s: volume %q is not declared", where, src)
				}
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("%s: secret %q is not declared", where, sec)
			}
		}
		for _, k := range []string{"KIE_API_KEY", "KONTEXTQ_API_TOKEN", "REDIS_URL", "KIE_WEBHOOK_HMAC_KEY"} {
			if v, ok := s.Environment[k]; ok && !strings.Contains(v, "${") {
				t.Errorf("%s: %s is written in the file; secrets come from the environment", where, k)
			}
		}
		if len(s.Command) > 0 && s.Command[0] == "worker" {
			d, err := time.ParseDuration(s.StopGracePeriod)
			if err != nil || d <= worker.StopTimeout {
				t.Errorf("%s: stop_grace_period %q; a worker may take %s to stop (worker.StopTimeout)", where, s.StopGracePeriod, worker.StopTimeout)
			}
			if metricsPort(s.Command) != 9100 {
				t.Errorf("%s: command %q; want --listen 0.0.0.0:9100, which Prometheus scrapes", where, s.Command)
			}
		}
	}
}

func metricsPort(args []string) int {
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) && strings.HasPrefix(args[i+1], "0.0.0.0:") {
			p, _ := strconv.Atoi(strings.TrimPrefix(args[i+1], "0.0.0.0:"))
			return p
		}
	}
	return 0
}

// The one-machine compose file: Redis wants a password that every kontextq process has in its
// REDIS_URL, Prometheus scrapes serve and every worker with the shipped rules loaded, and
// Grafana is provisioned with the shipped dashboard and a data source that reaches Prometheus.
func TestCompose(t *testing.T) {
	const path = "compose.yaml"
	c := readCompose(t, path)
	checkServices(t, path, c)
	for _, name := range []string{"redis", "worker", "serve", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("%s: no service %s", path, name)
		}
	}

	redis := c.Services["redis"]
	cmd := strings.Join(append(redis.Entrypoint, redis.Command...), " ")
	if !strings.Contains(cmd, "requirepass") || !strings.Contains(cmd, "/run/secrets/redis_password") ||
		!strings.Contains(cmd, "noeviction") || !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("%s: redis runs %q; want requirepass from the redis_password secret, append-only persistence and noeviction", path, cmd)
	}
	if c.Secrets["redis_password"].Environment != "REDIS_PASSWORD" {
		t.Errorf("%s: the redis_password secret does not come from REDIS_PASSWORD", path)
	}
	if hc := redis.Healthcheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "REDISCLI_AUTH") {
		t.Errorf("%s: redis's health check does not authenticate, so it never passes", path)
	}
	withPassword := regexp.MustCompile(`^redis://:\$\{REDIS_PASSWORD(:\?[^}]*)?\}@redis:6379/\d+$`)
	for _, name := range []string{"worker", "serve"} {
		if u := c.Services[name].Environment["REDIS_URL"]; !withPassword.MatchString(u) {
			t.Errorf("%s: %s's REDIS_URL is %q; want redis://:${REDIS_PASSWORD}@redis:6379/DB", path, name, u)
		}
	}

	// Prometheus: the configuration, the rules and the target files are mounted where
	// prometheus.yml expects them; the worker job scrapes compose's worker service.
	prom := c.Services["prometheus"]
	mounts := map[string]string{}
	for _, v := range prom.Volumes {
		parts := strings.Split(v, ":")
		mounts[parts[1]] = parts[0]
	}
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			Authorization *struct {
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
			FileSDConfigs []struct {
				Files []string `yaml:"files"`
			} `yaml:"file_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(mounts["/etc/prometheus/prometheus.yml"])
	if err != nil {
		t.Fatalf("%s: prometheus's configuration: %v", path, err)
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	for _, rf := range pc.RuleFiles {
		if mounts[rf] != "./prometheus/alerts.yaml" {
			t.Errorf("prometheus.yml loads %s, where compose mounts %q, not ./prometheus/alerts.yaml", rf, mounts[rf])
		}
	}
	if len(pc.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule file")
	}
	jobs := map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		jobs[sc.JobName] = true
		if a := sc.Authorization; a != nil {
			sec, ok := strings.CutPrefix(a.CredentialsFile, "/run/secrets/")
			if !ok || !contains(prom.Secrets, sec) {
				t.Errorf("prometheus.yml job %s reads %s, which is not a secret compose gives prometheus", sc.JobName, a.CredentialsFile)
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				host, _, _ := strings.Cut(tg, ":")
				if _, ok := c.Services[host]; !ok {
					t.Errorf("prometheus.yml job %s scrapes %s, which is no compose service", sc.JobName, tg)
				}
			}
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				if s, ok := c.Services[n]; !ok || metricsPort(s.Command) != d.Port {
					t.Errorf("prometheus.yml job %s scrapes %s:%d, which is not a compose service's metrics listener", sc.JobName, n, d.Port)
				}
			}
		}
		for _, f := range sc.FileSDConfigs {
			for _, g := range f.Files {
				if mounts[filepath.Dir(g)] == "" {
					t.Errorf("prometheus.yml job %s reads %s, in no directory compose mounts", sc.JobName, g)
				}
			}
		}
	}
	if !jobs[serveJob] || !jobs[workerJob] {
		t.Errorf("prometheus.yml has jobs %v; the rules and dashboard read %q and %q", jobs, serveJob, workerJob)
	}

	// Grafana: provisioning and dashboards are mounted; the provider reads where the
	// dashboards are; the data source is compose's Prometheus under the uid the dashboard uses.
	gr := c.Services["grafana"]
	gmounts := map[string]string{}
	for _, v := range gr.Volumes {
		parts := strings.Split(v, ":")
		gmounts[parts[1]] = parts[0]
	}
	prov := gmounts["/etc/grafana/provisioning"]
	if prov == "" {
		t.Fatalf("%s: grafana has no provisioning mounted", path)
	}
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err = os.ReadFile(filepath.Join(prov, "dashboards", "kontextq.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &provider); err != nil || len(provider.Providers) != 1 {
		t.Fatalf("grafana dashboard provider: %v", err)
	}
	dashDir := gmounts[provider.Providers[0].Options.Path]
	if _, err := os.Stat(filepath.Join(dashDir, "kontextq.json")); err != nil {
		t.Errorf("grafana's dashboard provider reads %s, where compose mounts %q without kontextq.json", provider.Providers[0].Options.Path, dashDir)
	}
	if home := gr.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && filepath.Dir(home) != provider.Providers[0].Options.Path {
		t.Errorf("grafana's home dashboard %s is not in the provisioned folder", home)
	}
	var ds struct {
		Datasources []struct {
			UID string `yaml:"uid"`
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	b, err = os.ReadFile(filepath.Join(prov, "datasources", "prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil || len(ds.Datasources) != 1 {
		t.Fatalf("grafana data source: %v", err)
	}
	if ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana's data source is %s, not compose's prometheus", ds.Datasources[0].URL)
	}
	b, err = os.ReadFile(filepath.Join(dashDir, "kontextq.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name    string `json:"name"`
				Current struct {
					Value any `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, v := range dash.Templating.List {
		if v.Name == "datasource" && v.Current.Value != ds.Datasources[0].UID {
			t.Errorf("the dashboard's data source defaults to %v; the provisioned one is %s", v.Current.Value, ds.Datasources[0].UID)
		}
	}
	if gr.Environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] != "/run/secrets/grafana_admin_password" || !contains(gr.Secrets, "grafana_admin_password") {
		t.Errorf("grafana's admin password does not come from the grafana_admin_password secret")
	}
}

// The workers-only file for another machine: workers alone, against a Redis named by the
// operator, with their metrics published for the first machine's Prometheus.
func TestComposeWorkersOnly(t *testing.T) {
	const path = "compose.workers.yaml"
	c := readCompose(t, path)
	checkServices(t, path, c)
	if len(c.Services) != 1 {
		t.Errorf("%s: services %v; want the workers only", path, c.Services)
	}
	w, ok := c.Services["worker"]
	if !ok {
		t.Fatalf("%s: no worker service", path)
	}
	if u := w.Environment["REDIS_URL"]; !strings.HasPrefix(u, "${REDIS_URL:?") {
		t.Errorf("%s: REDIS_URL is %q; it must be the operator's, and required", path, u)
	}
	published := false
	for _, p := range w.Ports {
		published = published || strings.HasSuffix(p, ":9100")
	}
	if !published {
		t.Errorf("%s: ports %v do not publish the metrics listener (9100)", path, w.Ports)
	}
}

// The systemd worker unit stops within its TimeoutStopSec and serves its metrics where
// prometheus.yml says.
func TestSystemdWorkerUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/kontextq-worker@.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\S+)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("kontextq-worker@.service sets no TimeoutStopSec")
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d <= worker.StopTimeout {
		t.Errorf("TimeoutStopSec=%s; a worker may take %s to stop (worker.StopTimeout)", m[1], worker.StopTimeout)
	}
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/kontextq worker --listen 127.0.0.1:910%i\n") {
		t.Error("kontextq-worker@.service does not serve metrics on 127.0.0.1:910N")
	}
	prom, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(prom), "kontextq-worker@N.service listens on 127.0.0.1:910N") {
		t.Error("prometheus.yml does not say where the systemd workers' metrics are")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
