package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
)

func TestExitStatus(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		started  bool
		wantCode int
		wantMsg  string
	}{
		{"usage error", usageErr(errors.New("--rate: bad")), true, exitUsage, "--rate: bad"},
		{"some jobs failed", &exitError{code: exitFailed}, true, exitFailed, ""},
		{"cobra refused the command line", errors.New(`unknown command "runn" for "kontextq"`), false, exitUsage, `unknown command "runn" for "kontextq"`},
		{"an operation failed", errors.New("REDIS_URL (--redis-url): Redis at x does not answer"), true, exitFailed, "REDIS_URL (--redis-url): Redis at x does not answer"},
		{"wrapped usage error", fmt.Errorf("load: %w", usageErr(errors.New("bad line"))), true, exitUsage, "bad line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := exitStatus(tc.err, tc.started)
			if code != tc.wantCode || msg != tc.wantMsg {
				t.Errorf("exitStatus = %d %q, want %d %q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// Each mistake a new user makes is refused with exit 2 and a message naming what is wrong (the
// argument, file, flag or setting) and what is accepted; none of them leaves an archive
// directory or a journal behind, and none starts the in-memory Redis.
func TestUsageMistakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bad.jsonl"), []byte(`{"prompt": "a kite", "aspectRatio": "2:1"}`+"\n"))
	writeFile(t, filepath.Join(dir, "prompts.dat"), []byte("a kite\n"))
	writeFile(t, filepath.Join(dir, "prompts.txt"), []byte("a kite\n"))
	if err := os.Mkdir(filepath.Join(dir, "jobs.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := []string{"KIE_API_KEY=k", "KIE_BASE_URL=http://127.0.0.1:1", "KIE_UPLOAD_URL=http://127.0.0.1:1"}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no file", []string{"run"}, []string{"usage: kontextq run FILE"}},
		{"two files", []string{"run", "a.jsonl", "b.jsonl"}, []string{"usage: kontextq run FILE"}},
		{"unknown command", []string{"runn"}, []string{`unknown command "runn"`, "run"}},
		{"unknown flag", []string{"run", "prompts.txt", "--bogus"}, []string{"--bogus", "kontextq run --help"}},
		{"missing file", []string{"run", "missing.jsonl"}, []string{"missing.jsonl", "no such file"}},
		{"bad line", []string{"run", "bad.jsonl"}, []string{"bad.jsonl:1: aspectRatio", "nothing was enqueued"}},
		{"a directory", []string{"run", "jobs.jsonl"}, []string{"jobs.jsonl is a directory"}},
		{"unknown extension", []string{"run", "prompts.dat"}, []string{"prompts.dat", "--format jsonl, csv or text"}},
		{"unknown format", []string{"run", "prompts.txt", "--format", "xml"}, []string{`--format "xml"`, "jsonl, csv or text"}},
		{"bad defaults", []string{"run", "prompts.txt", "--model", "flux-ultra", "--aspect-ratio", "2:1"},
			[]string{`--model: "flux-ultra" is not one of flux-kontext-pro`, `--aspect-ratio: "2:1"`}},
		{"bad batch", []string{"run", "prompts.txt", "--batch", "my batch"}, []string{`--batch: "my batch"`}},
		{"bad rate", []string{"run", "prompts.txt", "--rate", "20"}, []string{`--rate: "20" is not a rate`, "20/10s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := kq(t, dir, key, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; output:\n%s", code, exitUsage, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "in-memory Redis") {
				t.Errorf("the in-memory Redis was started for a command line that cannot run:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(dir, "archive")); err == nil {
				t.Errorf("a refused command created the archive directory")
			}
		})
	}
}

// A Redis that does not answer is not the user's input: exit 1 (try again), naming the setting,
// never the password, and without go-redis's own log lines.
func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	code, out := kq(t, t.TempDir(), []string{"REDIS_URL=redis://:hunter2@" + freeAddr(t) + "/0"}, "status")
	if code != exitFailed || !strings.Contains(out, "REDIS_URL (--redis-url): Redis at") || !strings.Contains(out, "does not answer") {
		t.Errorf("exit %d, want %d naming REDIS_URL; output:\n%s", code, exitFailed, out)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "pool.go") {
		t.Errorf("output shows the password or go-redis's own log:\n%s", out)
	}
}

// Cancelling a large batch while a worker submits it leaves nothing of it waiting anywhere: not
// in line, not in asynq's submit queue (where the dashboard would show it), and Kie receives no
// generate call for it after the jobs already at Kie.
func TestCancelLeavesNothingWaiting(t *testing.T) {
	if testing.Short() {
		t.Skip("loads and cancels a large batch under a running worker")
	}
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{})
	dir := t.TempDir()
	envv := append(workerEnv(env, sim, dir), "KONTEXTQ_RATE=5/1s")
	const n = 3000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "kite number %d\n", i)
	}
	path := writeFile(t, filepath.Join(dir, "kites.txt"), []byte(b.String()))
	if code, out := kq(t, dir, envv, "load", path); code != 0 {
		t.Fatalf("load: exit %d\n%s", code, out)
	}
	if qi := submitQueue(t, env); qi.Size > 0 {
		t.Errorf("load put %d tasks in asynq's submit queue; the jobs should wait in line outside it", qi.Size)
	}
	w := start(t, dir, envv, "worker")
	eventually.True(t, time.Minute, "a few submissions", func() bool { return sim.Stats().Requests[kiesim.EndpointGenerate] >= 3 })
	code, out := kq(t, dir, envv, "cancel", "kites")
	if code != 0 || !strings.Contains(out, "queued jobs cancelled") {
		t.Fatalf("cancel: exit %d\n%s", code, out)
	}
	ledger := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	ctx := context.Background()
	waiting, err := ledger.Waiting(ctx)
	if err != nil || len(waiting) != 0 {
		t.Errorf("after cancel, waiting in line: %+v %v; want nothing", waiting, err)
	}
	// A task a worker holds at this moment may remain until it drops it.
	eventually.True(t, 10*time.Second, "asynq's submit queue to be empty", func() bool {
		qi := submitQueue(t, env)
		return qi.Pending+qi.Retry+qi.Scheduled+qi.Active == 0
	})
	var c jobs.Counts
	eventually.True(t, 10*time.Second, "nothing queued (a submission under way at the cancel ends submitted)", func() bool {
		c, err = ledger.Counts(ctx, "kites")
		return err == nil && c.Queued == 0
	})
	if c.Failed < n-100 {
		t.Fatalf("counts after cancel: %+v, want nearly all %d cancelled", c, n)
	}
	paid := sim.Stats().Requests[kiesim.EndpointGenerate]
	time.Sleep(time.Second) // five tokens' time: a leftover task would be submitted in it
	if after := sim.Stats().Requests[kiesim.EndpointGenerate]; after != paid {
		t.Errorf("%d generate calls after the cancel took effect", after-paid)
	}
	if int64(paid) != c.Total-c.Failed {
		t.Errorf("%d generate calls, want one per job not cancelled (%d)", paid, c.Total-c.Failed)
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	w.wait(t, 30*time.Second)
}

// A wrong key stops run and worker at once, naming the setting, instead of leaving the batch
// waiting on an account paused for minutes.
func TestWrongKieKey(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{})
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "kites.txt"), []byte("a red kite\n"))
	wrong := []string{"KIE_API_KEY=not-" + sim.Key, "KIE_BASE_URL=" + sim.APIURL, "KIE_UPLOAD_URL=" + sim.UploadURL}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"run", wrong, []string{"run", path, "--no-serve"}},
		{"worker", cliEnv(env, wrong...), []string{"worker"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := kq(t, dir, tc.env, tc.args...)
			if code != exitUsage || !strings.Contains(out, "KIE_API_KEY (--kie-api-key): Kie.ai refused the key") {
				t.Errorf("exit %d, want %d naming KIE_API_KEY; output:\n%s", code, exitUsage, out)
			}
			if strings.Contains(out, "not-"+sim.Key) {
				t.Errorf("output shows the key:\n%s", out)
			}
		})
	}
	if n := sim.Stats().Requests[kiesim.EndpointGenerate]; n != 0 {
		t.Errorf("%d generate calls with a wrong key, want 0", n)
	}
}

// Each command's help lists the settings it uses and no others, in one spelling.
func TestHelpListsTheSettingsACommandUses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args      []string
		want, not []string
	}{
		{[]string{"status", "--help"}, []string{"--redis-url", "--namespace", "--rate "}, []string{"--submit-workers", "--archive-workers", "--kie-api-key", "--listen"}},
		{[]string{"worker", "--help"}, []string{"--submit-workers", "--kie-api-key", "--listen "}, []string{"--metrics-listen", "--api-token", "--price"}},
		{[]string{"sim", "--help"}, []string{"--listen ", "--rate ", "--poll-rate "}, []string{"--addr", "--limit", "--poll-limit", "--kie-api-key", "--redis-url"}},
		{[]string{"bench", "ratelimit", "--help"}, []string{"--rate ", "--redis-url"}, []string{"--window", "--limit", "--kie-api-key"}},
		{[]string{"export", "--help"}, []string{"--redis-url", "--retention"}, []string{"--rate", "--archive "}},
		{[]string{"config", "--help"}, []string{"--kie-api-key", "--submit-workers", "--api-token", "--price"}, nil},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out := kq(t, t.TempDir(), nil, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %s:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("help lists %s, which the command does not use:\n%s", n, out)
				}
			}
		})
	}
}

// Spellings of earlier releases keep working, with a note naming the new one; a setting given
// before the command still counts.
func TestOldSpellingsStillWork(t *testing.T) {
	t.Parallel()
	code, out := kq(t, t.TempDir(), nil, "--rate", "5/1s", "config")
	if code != 0 || !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		return strings.HasPrefix(l, "rate ") && strings.HasSuffix(l, "= 5/1s")
	}) {
		t.Errorf("a setting before the command: exit %d:\n%s", code, out)
	}
	sim := start(t, t.TempDir(), nil, "sim", "--addr", "127.0.0.1:0", "--limit", "5/1s")
	eventually.True(t, time.Minute, "the simulator to start", func() bool { return strings.Contains(sim.out.String(), "Kie simulator on http://127.0.0.1:") })
	for _, w := range []string{"--addr has been deprecated, use --listen", "--limit has been deprecated, use --rate"} {
		if !strings.Contains(sim.out.String(), w) {
			t.Errorf("sim output lacks %q:\n%s", w, sim.out.String())
		}
	}
	_ = sim.cmd.Process.Signal(syscall.SIGTERM)
	sim.wait(t, 30*time.Second)
}

// Every configuration problem is reported in one run, each naming its setting.
func TestEveryConfigurationProblemAtOnce(t *testing.T) {
	t.Parallel()
	code, out := kq(t, t.TempDir(), []string{"KONTEXTQ_RATE=20", "KONTEXTQ_SUBMIT_WORKERS=0"}, "worker")
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	for _, w := range []string{`KONTEXTQ_RATE: "20" is not a rate`, "KONTEXTQ_SUBMIT_WORKERS: 0 is too few", "no Kie.ai API key", "REDIS_URL (--redis-url) is not set"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
