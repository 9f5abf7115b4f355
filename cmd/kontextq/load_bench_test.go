package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// BenchmarkLoad measures `kontextq load` on a JSONL file of KONTEXTQ_BENCH_LINES lines (default
// 1,000,000) against a baseline measured in the same run on the same Redis: raw asynq Enqueue
// calls of the same submit tasks from 16 goroutines. It reports both throughputs and their ratio,
// the loader's peak RSS (the load runs as its own process, built without -race), and the Redis
// memory per loaded job (task plus ledger, from INFO memory). Run it once:
//
//	go test -run '^$' -bench BenchmarkLoad -benchtime 1x -timeout 30m ./cmd/kontextq/
func BenchmarkLoad(b *testing.B) {
	lines := 1_000_000
	if v := os.Getenv("KONTEXTQ_BENCH_LINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("KONTEXTQ_BENCH_LINES=%q", v)
		}
		lines = n
	}
	env := redistest.New(b)
	ctx := context.Background()
	dir := b.TempDir()
	bin := filepath.Join(dir, "kontextq")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("building kontextq: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "prompts.jsonl")
	writeBenchFile(b, file, lines)

	// A million jobs are millions of keys: more than redistest's cleanup deletes in its time.
	b.Cleanup(func() { purge(b, env) })
	for b.Loop() {
		purge(b, env)
		raw := rawEnqueue(b, env.Client, env.Prefix+"raw", lines)
		purge(b, env)

		before := usedMemory(b, env.Client)
		start := time.Now()
		cmd := exec.Command(bin, "load", file, "--batch", "bench")
		cmd.Env = append(os.Environ(), "REDIS_URL="+env.URL, "KONTEXTQ_NAMESPACE="+env.Prefix+"ns", "KONTEXTQ_LOG_LEVEL=warn")
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("kontextq load: %v\n%s", err, out)
		}
		after := usedMemory(b, env.Client)
		c, err := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"}).Counts(ctx, "bench")
		if err != nil || c.Queued != int64(lines) {
			b.Fatalf("after the load the batch holds %+v (%v), want %d queued", c, err, lines)
		}
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
		load := float64(lines) / took.Seconds()
		perJob := float64(after-before) / float64(lines)

		b.ReportMetric(raw, "raw-enqueues/s")
		b.ReportMetric(load, "loaded-lines/s")
		b.ReportMetric(load/raw, "ratio")
		b.ReportMetric(float64(rss)/1024, "loader-peak-RSS-MiB")
		b.ReportMetric(perJob, "redis-bytes/job")
		b.Logf("%d lines: raw asynq %.0f enqueues/s; kontextq load %.0f lines/s in %s (ratio %.2f); loader peak RSS %.1f MiB; Redis %.0f bytes/job",
			lines, raw, load, took.Round(time.Millisecond), load/raw, float64(rss)/1024, perJob)
	}
}

// purge deletes every key of the benchmark, however many.
func purge(b *testing.B, env *redistest.Env) {
	ctx := context.Background()
	iter := env.Client.Scan(ctx, 0, "*"+env.Prefix+"*", 10000).Iterator()
	keys := make([]string, 0, 10000)
	flush := func() {
		if len(keys) > 0 {
			if err := env.Client.Unlink(ctx, keys...).Err(); err != nil {
				b.Fatalf("purge: %v", err)
			}
			keys = keys[:0]
		}
	}
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == cap(keys) {
			flush()
		}
	}
	if err := iter.Err(); err != nil {
		b.Fatalf("purge: %v", err)
	}
	flush()
	env.Cleanup() // and asynq's queue set
}

// writeBenchFile writes n distinct jobs, a mix of generations and edits of both models.
func writeBenchFile(b *testing.B, path string, n int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	ratios := []string{"1:1", "16:9", "4:3", "9:16"}
	for i := range n {
		model := "flux-kontext-pro"
		if i%5 == 0 {
			model = "flux-kontext-max"
		}
		if i%4 == 0 {
			fmt.Fprintf(w, `{"prompt": "make the sky stormy and add rain, product shot %d", "inputImage": "https://cdn.example.com/products/%d.jpg", "model": %q}`+"\n", i, i, model)
			continue
		}
		fmt.Fprintf(w, `{"prompt": "a watercolor painting of a lighthouse at dawn, seagulls, variation %d", "aspectRatio": %q, "model": %q}`+"\n", i, ratios[i%len(ratios)], model)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// rawEnqueue enqueues n submit tasks (as the loader builds them) from 16 goroutines and returns
// the rate.
func rawEnqueue(b *testing.B, rdb *redis.Client, ns string, n int) float64 {
	client := asynq.NewClientFromRedisClient(rdb)
	defer client.Close()
	q := jobs.QueuesFor(ns)
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				t, opts := jobs.SubmitTask(q, jobs.Ref{Batch: "bench", ID: "j" + strconv.FormatInt(i, 32) + strings.Repeat("x", 18)}, 0)
				if _, err := client.Enqueue(t, opts...); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		b.Fatalf("raw enqueue: %v", firstErr)
	}
	return float64(n) / took.Seconds()
}

func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}
