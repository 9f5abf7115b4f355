package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// Every metric that the alert rules, the dashboard and the KEDA trigger query exists on the
// /metrics of a real serve (or, for the worker job, a real worker's --listen), started
// against real Redis and the simulator with a batch at work. A panel or alert naming a metric
// that does not exist would show nothing, or never fire, without any error.
func TestShippedQueriesNameMetricsThatExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kontextq and works a batch; about half a minute")
	}
	want := wantedMetrics(t)

	bin := buildKontextq(t)
	env := redistest.New(t)
	sim := kietest.NewServer(t, kiesim.Options{
		// The simulator allows fewer generate calls than the workers are told to make, so that
		// 429s are answered and counted; a prompt is refused, so a job fails; downloads are slow
		// enough that generated results wait for their archive.
		GenerateLimit: 4, GenerateWindow: time.Second,
		RecordInfoLimit: 100, RecordInfoWindow: time.Second,
		GenTimeMedian: 300 * time.Millisecond, GenTimeSigma: -1,
		ContentPolicyWords: []string{"forbidden"},
		DownloadDelay:      time.Second,
		Credits:            1e6,
		Seed:               12,
	})
	dir := t.TempDir()
	serveAddr, workerAddr := freeAddr(t), freeAddr(t)
	base := []string{
		"REDIS_URL=" + env.URL, "KIE_API_KEY=" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL,
		"KONTEXTQ_NAMESPACE=" + env.Prefix + "ns", "KONTEXTQ_ARCHIVE=" + filepath.Join(dir, "archive"),
		"KONTEXTQ_RATE=20/1s", "KONTEXTQ_POLL_RATE=50/1s", "KONTEXTQ_FIRST_POLL=1s", "KONTEXTQ_POLL_INTERVAL=1s",
		"KONTEXTQ_ARCHIVE_WORKERS=1", "KONTEXTQ_LOG_LEVEL=warn",
	}
	const token = "deploy-test-token"
	startProc(t, dir, append(base, "KONTEXTQ_LISTEN="+serveAddr, "KONTEXTQ_API_TOKEN="+token), bin, "serve")
	startProc(t, dir, base, bin, "worker", "--listen", workerAddr)
	waitHTTP(t, "http://"+serveAddr+"/readyz")
	waitHTTP(t, "http://"+workerAddr+"/readyz")

	var jobs strings.Builder
	for i := range 30 {
		fmt.Fprintf(&jobs, `{"prompt": "a lighthouse in the fog, take %d"}`+"\n", i)
	}
	jobs.WriteString(`{"prompt": "a forbidden lighthouse"}` + "\n")
	req, _ := http.NewRequest("POST", "http://"+serveAddr+"/v1/jobs?batch=lighthouses", strings.NewReader(jobs.String()))
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/jobs: %s", resp.Status)
	}
	// A callback nobody signed: refused, and counted.
	if resp, err := http.Post("http://"+serveAddr+"/kie/callback", "application/json",
		strings.NewReader(`{"code": 200, "data": {"taskId": "not-ours"}}`)); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	// Series appear as the batch goes (a 429, a failure, a result waiting for its archive):
	// the names seen over the run are what exists.
	seen := map[string]map[string]bool{serveJob: {}, workerJob: {}}
	addr := map[string]string{serveJob: serveAddr, workerJob: workerAddr}
	missing := func() []string {
		var m []string
		for job, names := range want {
			for name := range names {
				if !seen[job][name] {
					m = append(m, job+": "+name)
				}
			}
		}
		slices.Sort(m)
		return m
	}
	eventually.Nil(t, 90*time.Second, "every queried metric on the /metrics of a working deployment", func() error {
		for job, a := range addr {
			for _, n := range scrape(t, "http://"+a+"/metrics") {
				seen[job][n] = true
			}
		}
		m := missing()
		if len(m) == 0 {
			return nil
		}
		var b strings.Builder
		for _, m := range m {
			job, name, _ := strings.Cut(m, ": ")
			fmt.Fprintf(&b, "\n%s is not on the %s /metrics; queried by %s",
				name, job, strings.Join(slices.Compact(slices.Sorted(slices.Values(want[job][name]))), ", "))
		}
		fmt.Fprintf(&b, "\nserve exports: %s", strings.Join(slices.Sorted(maps.Keys(seen[serveJob])), " "))
		fmt.Fprintf(&b, "\nworker exports: %s", strings.Join(slices.Sorted(maps.Keys(seen[workerJob])), " "))
		return errors.New(b.String())
	})
}

// scrape returns the metric names of a text exposition (histograms' _bucket, _sum and _count
// as such).
func scrape(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: %s\n%s", url, resp.Status, b)
	}
	var names []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		if i := strings.IndexAny(l, "{ "); i > 0 {
			names = append(names, l[:i])
		}
	}
	return names
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildKontextq builds the binary once per test run.
func buildKontextq(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kontextq-deploy")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "kontextq")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/kontextq")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building kontextq: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// startProc starts a kontextq process that is killed when the test ends; its output is shown
// when the test fails.
func startProc(t *testing.T, dir string, env []string, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}, env...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("kontextq %s:\n%s", strings.Join(args, " "), out.String())
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	eventually.Nil(t, 30*time.Second, url+" to answer 200", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("answered %s", resp.Status)
		}
		return nil
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
