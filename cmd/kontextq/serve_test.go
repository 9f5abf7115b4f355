package main

import (
	"bytes"
	"context"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeRefusesToRunOpenToTheNetwork(t *testing.T) {
	env := redistest.New(t)
	base := []string{"REDIS_URL=" + env.URL, "KIE_API_KEY=sim-key", "KONTEXTQ_NAMESPACE=" + env.Prefix + "ns"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no token", []string{"serve", "--listen", "0.0.0.0:0"}, "KONTEXTQ_API_TOKEN"},
		{"no token on loopback", []string{"serve", "--listen", "127.0.0.1:0"}, "--insecure-no-token"},
		{"insecure off loopback", []string{"serve", "--listen", "0.0.0.0:0", "--insecure-no-token"}, "loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, t.TempDir(), base, tc.args...)
			if code := p.wait(t, 30*time.Second); code != exitUsage {
				t.Errorf("exit %d, want %d; output:\n%s", code, exitUsage, p.out.String())
			}
			if !strings.Contains(p.out.String(), tc.want) {
				t.Errorf("output does not mention %s:\n%s", tc.want, p.out.String())
			}
		})
	}
}

// TestServeDashboardInChromium opens the dashboard that kontextq serve serves in headless
// Chromium, checks that it shows the namespace's queues, and saves a screenshot
// ($KONTEXTQ_TEST_ARTIFACTS, else a temporary directory).
func TestServeDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("drives Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; CI must run this test (apt-get install -y chromium)")
		}
		t.Skip("chromium is not installed (Debian: apt-get install -y chromium); skipping the dashboard test")
	}
	env := redistest.New(t)
	ns := env.Prefix + "ns"
	q := jobs.QueuesFor(ns)
	t.Cleanup(func() {
		env.Client.SRem(context.Background(), "asynq:queues", q.Submit, q.SubmitNormal, q.SubmitInteractive, q.Poll, q.Archive, q.Sweep)
	})
	const token, hmacKey = "dashboard-test-token", "dashboard-test-hmac"
	addr := freeAddr(t)
	p := start(t, t.TempDir(), []string{"REDIS_URL=" + env.URL, "KIE_API_KEY=sim-key", "KONTEXTQ_NAMESPACE=" + ns,
		"KONTEXTQ_API_TOKEN=" + token, "KIE_WEBHOOK_HMAC_KEY=" + hmacKey}, "serve", "--listen", addr)
	base := "http://" + addr
	eventually.True(t, 30*time.Second, "kontextq serve to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Work in each queue, the way it gets there: a job through the API, dispatched to its class's
	// submit queue as a worker's dispatcher would, a callback for its task (a check in poll), and
	// an archive task as a worker would queue it.
	req, _ := http.NewRequest("POST", base+"/v1/jobs?batch=dash", strings.NewReader(`{"prompt": "a lighthouse at dusk"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("POST /v1/jobs = %d", resp.StatusCode)
	}
	ledger := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: ns})
	var ref jobs.Ref
	if err := ledger.Each(context.Background(), "dash", func(j *jobs.Job) error { ref = j.Ref; return nil }); err != nil {
		t.Fatal(err)
	}
	ds, err := ledger.Dispatch(context.Background(), 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Dispatch: %v %v", ds, err)
	}
	tasks := jobs.NewTasks(env.Client, jobs.TasksOptions{Namespace: ns})
	defer tasks.Close()
	if err := tasks.SubmitAs(context.Background(), ds[0].Ref, ds[0].Submissions, ds[0].Priority); err != nil {
		t.Fatal(err)
	}
	if ok, err := ledger.RecordSubmitted(context.Background(), ref, "task-dash"); err != nil || !ok {
		t.Fatalf("RecordSubmitted: %v %v", ok, err)
	}
	ts, sig := kie.SignCallback([]byte(hmacKey), "task-dash", time.Now())
	req, _ = http.NewRequest("POST", base+"/kie/callback", strings.NewReader(`{"code":200,"msg":"success","data":{"taskId":"task-dash"}}`))
	req.Header.Set(kie.HeaderWebhookTimestamp, ts)
	req.Header.Set(kie.HeaderWebhookSignature, sig)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("callback = %d", resp.StatusCode)
	}
	ac := asynq.NewClientFromRedisClient(env.Client)
	defer ac.Close()
	if _, err := ac.Enqueue(asynq.NewTask(jobs.TypeArchive, jobs.EncodePayload(jobs.Payload{Ref: ref})),
		asynq.Queue(q.Archive), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}

	// Each launch gets its own time: on a loaded machine one Chromium start can take a minute.
	browse := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--user-data-dir=" + t.TempDir(), "--window-size=1400,1800", "--virtual-time-budget=10000"}, args...)
		cmd := exec.CommandContext(ctx, chromium, all...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	page := base + "/monitoring/"
	var dom string
	var missing []string
	for attempt := 0; attempt < 3; attempt++ { // the app fetches its data after loading
		dom = string(browse("--dump-dom", page))
		missing = missing[:0]
		for _, name := range []string{q.SubmitNormal, q.Poll, q.Archive} {
			if !strings.Contains(dom, name) {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			break
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the dashboard at %s does not show %v; page text:\n%.3000s", page, missing, dom)
	}
	if !strings.Contains(dom, "Asynq") {
		t.Errorf("the page is not the asynq dashboard")
	}

	dir := os.Getenv("KONTEXTQ_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, url := range map[string]string{
		"dashboard-queues.png":       page,
		"dashboard-submit-queue.png": base + "/monitoring/queues/" + q.Submit,
	} {
		shot := filepath.Join(dir, name)
		browse("--screenshot="+shot, url)
		f, err := os.Open(shot)
		if err != nil {
			t.Fatalf("no screenshot: %v", err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("screenshot %s is not a PNG: %v", shot, err)
		}
		if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 1800 {
			t.Errorf("screenshot %s is %dx%d, want the window's 1400x1800", shot, b.Dx(), b.Dy())
		}
		t.Logf("screenshot of %s: %s", url, shot)
	}
	if p.cmd.ProcessState != nil {
		t.Errorf("kontextq serve exited early: %s", p.out.String())
	}
}
