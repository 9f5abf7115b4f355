package jobs_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// The example runs against the test Redis in a namespace of its own, removed afterwards. The
// process id has a fixed width because the cleanup matches the namespace anywhere in a key:
// "example23" would also match the keys of process 123, running at the same time.
var (
	redisURL  = redistest.URL()
	namespace = fmt.Sprintf("example%07d", os.Getpid())
)

// Another Go service enqueues work for kontextq's workers: one job with an id of its own, then a
// batch of prompts whose ids are derived from their content. Enqueueing is idempotent: the same
// job enqueued again is not added (nor paid for) twice. The workers ("kontextq worker" with the
// same namespace) submit, poll and archive the jobs; the ledger tells how far the batch has come.
func Example() {
	ctx := context.Background()
	opt, err := redis.ParseURL(redisURL) // e.g. "redis://127.0.0.1:6379/0", the workers' Redis
	if err != nil {
		fmt.Println(err)
		return
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: namespace}) // the workers' namespace ("kontextq" by default)
	defer enq.Close()

	// One edit, with the caller's own id: it names the archived file, catalog/sku-1042.png.
	out, err := enq.Enqueue(ctx, jobs.Spec{
		Batch:        "catalog",
		ID:           "sku-1042",
		Prompt:       "Put the shoe on a white marble pedestal, soft studio light",
		InputImage:   "https://images.example.com/sku-1042.jpg",
		OutputFormat: "png",
	})
	if err != nil {
		fmt.Println(err) // a *jobs.ValidationError names every field at fault
		return
	}
	fmt.Println(out.Ref, "added:", out.Added)

	again, _ := enq.Enqueue(ctx, jobs.Spec{Batch: "catalog", ID: "sku-1042", Prompt: "anything"})
	fmt.Println(again.Ref, "added:", again.Added, "state:", again.State)

	// A batch of generations.
	prompts := []string{
		"A lighthouse at dawn, watercolor",
		"A lighthouse at dusk, watercolor",
		"A lighthouse in a storm, watercolor",
	}
	for _, p := range prompts {
		if _, err := enq.Enqueue(ctx, jobs.Spec{Batch: "lighthouses", Prompt: p, AspectRatio: "4:3", Model: "flux-kontext-max"}); err != nil {
			fmt.Println(err)
			return
		}
	}
	c, err := enq.Ledger().Counts(ctx, "lighthouses")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("lighthouses: %d jobs, %d queued\n", c.Total, c.Queued)

	// A bad job is refused before anything is recorded.
	_, err = enq.Enqueue(ctx, jobs.Spec{Batch: "lighthouses", Prompt: "A lighthouse", AspectRatio: "2:1"})
	fmt.Println(err)

	// Output:
	// catalog/sku-1042 added: true
	// catalog/sku-1042 added: false state: queued
	// lighthouses: 3 jobs, 3 queued
	// aspectRatio: "2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16
}

// TestMain runs the example only when a Redis answers (or in CI, where one must), and removes the
// example's namespace afterwards.
func TestMain(m *testing.M) {
	flag.Parse()
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	up := rdb.Ping(pctx).Err() == nil
	cancel()
	if !up && os.Getenv("CI") == "" {
		_ = flag.Set("test.skip", "^Example$")
	}
	code := m.Run()
	if up {
		cleanNamespace(rdb, namespace)
	}
	_ = rdb.Close()
	os.Exit(code)
}

func cleanNamespace(rdb *redis.Client, ns string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "*"+ns+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
	for _, q := range rdb.SMembers(ctx, "asynq:queues").Val() {
		if strings.HasPrefix(q, ns+":") {
			rdb.SRem(ctx, "asynq:queues", q)
		}
	}
}
