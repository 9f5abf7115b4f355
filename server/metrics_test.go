package server_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/server"
)

func TestMetrics(t *testing.T) {
	m := server.NewMetrics()
	f := setup(t, fixtureOpts{server: func(o *server.Options) { o.Metrics = m }})
	f.sim.SetCredits(42.5)
	ctx := context.Background()

	// Two jobs queued, one generated with a known expiry.
	if code, b := f.post(t, "/v1/jobs?batch=m", "application/x-ndjson", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"); code != 200 {
		t.Fatalf("POST = %d %s", code, b)
	}
	ref := f.submitted(t, "m2", "c", "task-9")
	exp := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	if ok, err := f.ledger.RecordGenerated(ctx, ref, "task-9", jobs.Result{ResultURL: "https://x/y.png", ExpiresAt: exp}); err != nil || !ok {
		t.Fatalf("RecordGenerated: %v %v", ok, err)
	}
	// What a worker in this process reports.
	m.Submitted()
	m.RateLimited("generate")
	m.Archived(1234)
	m.Archived(766)
	m.Failed(jobs.Rejected)
	m.Generated(12 * time.Second)

	want := []string{
		`kontextq_jobs{state="queued"} 2`,
		`kontextq_jobs{state="generated"} 1`,
		`kontextq_batch_jobs{batch="m",state="queued"} 2`,
		`kontextq_batches{status="unfinished"} 2`,
		fmt.Sprintf("kontextq_unarchived_soonest_expiry_timestamp_seconds %s", strconv.FormatFloat(float64(exp.Unix()), 'g', -1, 64)),
		`kontextq_submissions_total 1`,
		`kontextq_rate_limited_total{endpoint="generate"} 1`,
		`kontextq_archived_bytes_total 2000`,
		`kontextq_archived_images_total 2`,
		`kontextq_job_failures_total{reason="rejected"} 1`,
		`kontextq_generation_seconds_count 1`,
		`kontextq_rate_configured_per_second{limiter="generate"}`,
		fmt.Sprintf(`asynq_queue_size{queue=%q} 3`, f.queues.Submit), // the submitted job's task is still there: no worker runs
		`kontextq_kie_credits 42.5`,                                  // refreshed in the background after the first scrape
	}
	var missing []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, b := f.do(t, "GET", "/metrics", "", "")
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks:\n%s\n\nit shows:\n%s", strings.Join(missing, "\n"), b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// When Kie refuses the account, every worker stops submitting: /metrics says so, with the
// reason, while the pause lasts.
func TestMetricsShowTheAccountPause(t *testing.T) {
	f := setup(t, fixtureOpts{server: func(o *server.Options) { o.Pause = o.Checker.(server.PauseSource) }})
	metrics := func() string {
		_, b := f.do(t, "GET", "/metrics", "", "")
		return string(b)
	}
	if m := metrics(); !strings.Contains(m, `kontextq_account_paused{reason=""} 0`) {
		t.Fatalf("/metrics does not show the account working:\n%s", m)
	}

	f.sim.SetCredits(0)
	if code, b := f.post(t, "/v1/jobs?batch=p", "application/x-ndjson", "{\"prompt\": \"a\"}\n"); code != 200 {
		t.Fatalf("POST = %d %s", code, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	paused := regexp.MustCompile(`(?m)^kontextq_account_paused\{reason="([^"]+)"\} 1$`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := metrics()
		if r := paused.FindStringSubmatch(m); r != nil {
			if !strings.Contains(r[1], "credit") {
				t.Errorf("paused for %q, want the lack of credits", r[1])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("out of credits, the worker ran 30s and /metrics does not show the account paused:\n%s", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
