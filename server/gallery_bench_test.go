package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/server"
)

// BenchmarkGalleryPage shows that a batch page costs what it shows, not the size of the batch:
// pages of a 100,000-job batch against the page of a 100-job batch, measured in the same run,
// through the whole HTTP handler (ledger reads and the rendered page with its 100 items).
//
//	go test ./server -run '^$' -bench GalleryPage -benchtime 50x
func BenchmarkGalleryPage(b *testing.B) {
	env := redistest.New(b)
	ns := env.Prefix + "ns"
	root := b.TempDir()
	store, err := archive.NewLocal(filepath.Join(root, "archive"))
	if err != nil {
		b.Fatal(err)
	}
	thumbs, err := gallery.NewThumbs(filepath.Join(root, "thumbs"), 2)
	if err != nil {
		b.Fatal(err)
	}
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: ns})
	defer enq.Close()
	l := enq.Ledger()
	ctx := context.Background()
	load := func(batch string, n int) {
		for start := 0; start < n; start += 5000 {
			ss := make([]*jobs.Spec, 0, 5000)
			for i := start; i < min(n, start+5000); i++ {
				ss = append(ss, &jobs.Spec{Batch: batch, ID: fmt.Sprintf("j%06d", i), OutputFormat: "png",
					Prompt: fmt.Sprintf("a lighthouse number %d on a cliff at dusk, oil painting", i)})
			}
			if _, err := l.CreateMany(ctx, ss, jobs.Bulk); err != nil {
				b.Fatal(err)
			}
		}
		// The pages measured show archived images (thumbnail and original links) and failures.
		firsts := []int{0}
		if n > 100 {
			firsts = append(firsts, n-100)
		}
		for _, first := range firsts {
			for i := first; i < first+100 && i < n; i++ {
				r := jobs.Ref{Batch: batch, ID: fmt.Sprintf("j%06d", i)}
				if i%10 == 0 {
					if _, err := l.Fail(ctx, r, nil, "", jobs.Rejected, "content policy"); err != nil {
						b.Fatal(err)
					}
					continue
				}
				archiveImage(b, l, store, r, i)
			}
		}
	}
	load("small", 100)
	load("big", 100_000)
	srv, err := server.New(server.Options{Redis: env.Client, Namespace: ns, Enqueuer: enq, Checker: noChecker{}, APIToken: testToken,
		Loopback: true, Archive: store, Thumbs: thumbs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	cases := []struct{ name, path string }{
		{"small", "/gallery/small/"},
		{"page1", "/gallery/big/"},
		{"page1000", "/gallery/big/?from=99900"},
		{"failed", "/gallery/big/?state=failed"},     // 10 failures, then 20,000 positions read
		{"search", "/gallery/big/?q=number+1999+on"}, // 11 matches among the 20,000 positions a page reads
	}
	spent := make([]time.Duration, len(cases))
	get := func(path string) {
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `data-id="`) {
			b.Fatalf("GET %s = %d, %d bytes without images", path, resp.StatusCode, len(body))
		}
	}
	for _, c := range cases {
		get(c.path) // warm: connections, script cache
	}
	for b.Loop() {
		for i, c := range cases {
			start := time.Now()
			get(c.path)
			spent[i] += time.Since(start)
		}
	}
	ms := func(i int) float64 { return float64(spent[i].Microseconds()) / 1000 / float64(b.N) }
	for i, c := range cases {
		b.ReportMetric(ms(i), c.name+"-ms")
	}
	b.ReportMetric(ms(1)/ms(0), "page1/small")
	b.ReportMetric(ms(2)/ms(0), "page1000/small")
}
