package server_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/server"
	"github.com/kontextq/kontextq/worker"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	var m, other *server.Metrics
	f := setup(t, fixtureOpts{server: func(o *server.Options) {
		m = server.NewSharedMetrics(o.Redis, o.Namespace, nil)
		other = server.NewSharedMetrics(o.Redis, o.Namespace, nil) // another process of the deployment
		o.Metrics = m
	}})
	t.Cleanup(func() { m.Close(); other.Close() })
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
	// What a worker in another process reports: in the deployment's counters, not this process's.
	other.Submitted()
	other.Archived(1000)
	other.Generated(3 * time.Second)
	other.Failed(jobs.Expired)
	other.Swept(worker.SweepReport{Archives: 2})

	want := []string{
		`kontextq_jobs{state="queued"} 2`,
		`kontextq_jobs{state="generated"} 1`,
		`kontextq_batch_jobs{batch="m",state="queued"} 2`,
		`kontextq_batches{status="unfinished"} 2`,
		fmt.Sprintf("kontextq_unarchived_soonest_expiry_timestamp_seconds %s", strconv.FormatFloat(float64(exp.Unix()), 'g', -1, 64)),
		// The deployment's counters, whichever process counted.
		`kontextq_submissions_total 2`,
		`kontextq_rate_limited_total{endpoint="generate"} 1`,
		`kontextq_rate_limited_total{endpoint="upload"} 0`,
		`kontextq_archived_bytes_total 3000`,
		`kontextq_archived_images_total 3`,
		`kontextq_job_failures_total{reason="rejected"} 1`,
		`kontextq_job_failures_total{reason="expired"} 1`,
		`kontextq_job_failures_total{reason="cancelled"} 0`,
		`kontextq_sweeps_total 1`,
		`kontextq_swept_total{kind="archive"} 2`,
		`kontextq_generation_seconds_count 2`,
		`kontextq_generation_seconds_sum 15`,
		`kontextq_generation_seconds_bucket{le="5"} 1`,
		`kontextq_generation_seconds_bucket{le="15"} 2`,
		`kontextq_callbacks_total{outcome="accepted"} 0`,
		// This process's own.
		`kontextq_process_submissions_total 1`,
		`kontextq_process_archived_images_total 2`,
		`kontextq_process_generation_seconds_count 1`,
		`kontextq_build_info{go="go`,
		`kontextq_rate_configured_per_second{limiter="generate"}`,
		// Three in line: no worker runs to dispatch them; the one this test moved on by hand keeps
		// its place until a dispatcher would find it submitted and drop it.
		`kontextq_waiting_jobs{priority="normal"} 3`,
		`kontextq_kie_credits 42.5`, // refreshed in the background after the first scrape
	}
	eventually.Nil(t, 10*time.Second, "/metrics to show every line", func() error {
		_, b := f.do(t, "GET", "/metrics", "", "")
		var missing []string
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("/metrics lacks:\n%s\n\nit shows:\n%s", strings.Join(missing, "\n"), b)
		}
		return nil
	})
}

// When Kie refuses the account, every worker stops submitting: /metrics says so, with the
// reason, while the pause lasts.
func TestMetricsShowTheAccountPause(t *testing.T) {
	t.Parallel()
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
	var reason string
	eventually.Nil(t, 30*time.Second, "/metrics to show the account paused while out of credits", func() error {
		m := metrics()
		r := paused.FindStringSubmatch(m)
		if r == nil {
			return fmt.Errorf("/metrics shows:\n%s", m)
		}
		reason = r[1]
		return nil
	})
	if !strings.Contains(reason, "credit") {
		t.Errorf("paused for %q, want the lack of credits", reason)
	}
}
