package kie_test

import (
	"bytes"
	"context"
	"image"
	_ "image/jpeg" // the simulator serves JPEG by default
	_ "image/png"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/kie/kietest"
)

// simClock is the simulator's clock, moved by the test instead of sleeping.
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type simBundle struct {
	sim    *kiesim.Server
	clock  *simClock
	client *kie.Client
}

func setupSim(t *testing.T, o kiesim.Options) simBundle {
	t.Helper()
	clock := &simClock{now: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)}
	o.Now = clock.Now
	sim := kietest.NewServer(t, o)
	c, err := kie.New(kie.Options{APIKey: sim.Key, BaseURL: sim.APIURL, UploadURL: sim.UploadURL})
	if err != nil {
		t.Fatal(err)
	}
	return simBundle{sim, clock, c}
}

// waitForResult polls record-info, moving the simulator's clock between polls as a worker's
// schedule would, until the task leaves the generating state.
func (b simBundle) waitForResult(t *testing.T, taskID string) *kie.Record {
	t.Helper()
	for i := 0; i < 200; i++ {
		rec, err := b.client.RecordInfo(context.Background(), taskID)
		switch {
		case kie.IsRateLimited(err) || kie.IsTimedOut(err):
			// the poll budget or a simulated 408: try again later
		case err != nil:
			t.Fatalf("RecordInfo(%s): %v", taskID, err)
		case rec.SuccessFlag != kie.Generating:
			return rec
		}
		b.clock.Advance(3 * time.Second)
	}
	t.Fatalf("task %s still generating after 600 simulated seconds", taskID)
	return nil
}

func (b simBundle) fetchImage(t *testing.T, url string) (format string, size image.Point) {
	t.Helper()
	resp, err := b.client.Fetch(context.Background(), url)
	if err != nil {
		t.Fatalf("Fetch(%s): %v", url, err)
	}
	defer resp.Body.Close()
	img, format, err := image.Decode(resp.Body)
	if err != nil {
		t.Fatalf("image from %s does not decode: %v", url, err)
	}
	return format, img.Bounds().Size()
}

func TestSimGenerateAndArchive(t *testing.T) {
	b := setupSim(t, kiesim.Options{Seed: 1, Quirks: true})
	ctx := context.Background()

	credits, err := b.client.Credits(ctx)
	if err != nil {
		t.Fatalf("Credits: %v", err)
	}
	if credits <= 0 {
		t.Fatalf("Credits = %v, want a positive balance", credits)
	}

	// Quirks rotate the record-info payload forms, so several tasks exercise the decoder.
	for i, req := range []kie.GenerateRequest{
		{Prompt: "a lighthouse at dusk", AspectRatio: "16:9", OutputFormat: "png"},
		{Prompt: "a red fox in snow", AspectRatio: "1:1"},
		{Prompt: "a tall glass of water", AspectRatio: "9:16", Model: "flux-kontext-max"},
	} {
		taskID, err := b.client.Generate(ctx, req)
		if err != nil {
			t.Fatalf("Generate %d: %v", i, err)
		}
		rec := b.waitForResult(t, taskID)
		if rec.SuccessFlag != kie.Succeeded {
			t.Fatalf("task %s ended with %+v", taskID, rec)
		}
		if rec.TaskID != taskID || rec.ResultImageURL == "" || rec.CreateTime.IsZero() || rec.CompleteTime.Before(rec.CreateTime) {
			t.Errorf("record %+v", rec)
		}
		format, size := b.fetchImage(t, rec.ResultImageURL)
		wantFormat := req.OutputFormat
		if wantFormat == "" {
			wantFormat = "jpeg"
		}
		if format != wantFormat {
			t.Errorf("task %s: image format %s, want %s", taskID, format, wantFormat)
		}
		if (req.AspectRatio == "16:9") != (size.X > size.Y) || (req.AspectRatio == "1:1") != (size.X == size.Y) {
			t.Errorf("task %s: image %v does not have ratio %s", taskID, size, req.AspectRatio)
		}

		direct, err := b.client.DownloadURL(ctx, rec.ResultImageURL)
		if err != nil {
			t.Fatalf("DownloadURL: %v", err)
		}
		if f2, _ := b.fetchImage(t, direct); f2 != format {
			t.Errorf("direct link serves %s, result URL %s", f2, format)
		}
	}

	_, err = b.client.DownloadURL(ctx, "https://elsewhere.example/x.png")
	if !kie.IsInvalidRequest(err) {
		t.Errorf("DownloadURL of a foreign URL: %v, want a 422", err)
	}
	if _, err := b.client.RecordInfo(ctx, "no-such-task"); !kie.IsNotFound(err) {
		t.Errorf("RecordInfo of an unknown task: %v, want a 404", err)
	}
	if st := b.sim.Stats(); st.Accepted != 3 || st.DuplicateSubmissions != 0 {
		t.Errorf("simulator accepted %d tasks (%d duplicates), want 3 and 0", st.Accepted, st.DuplicateSubmissions)
	}
}

func TestSimUploadsFeedEdits(t *testing.T) {
	b := setupSim(t, kiesim.Options{Seed: 2})
	ctx := context.Background()
	img := pngBytes(t)

	// A source image to upload by URL: a finished result on the simulator's own file host.
	srcTask, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "a blue square", AspectRatio: "1:1", OutputFormat: "png"})
	if err != nil {
		t.Fatal(err)
	}
	src := b.waitForResult(t, srcTask)

	uploads := map[string]func() (*kie.UploadedFile, error){
		"stream": func() (*kie.UploadedFile, error) {
			return b.client.UploadStream(ctx, bytes.NewReader(img), "stream.png", "kontextq/test")
		},
		"base64": func() (*kie.UploadedFile, error) {
			return b.client.UploadBase64(ctx, img, "b64.png", "kontextq/test")
		},
		"url": func() (*kie.UploadedFile, error) {
			return b.client.UploadURL(ctx, src.ResultImageURL, "byurl.png", "kontextq/test")
		},
	}
	for name, upload := range uploads {
		t.Run(name, func(t *testing.T) {
			f, err := upload()
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			if f.DownloadURL == "" || f.FileSize <= 0 {
				t.Fatalf("uploaded file %+v", f)
			}
			if format, _ := b.fetchImage(t, f.DownloadURL); format != "png" {
				t.Errorf("uploaded file reads back as %s, want png", format)
			}
			taskID, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "make it green", InputImage: f.DownloadURL})
			if err != nil {
				t.Fatalf("Generate with the upload as inputImage: %v", err)
			}
			if rec := b.waitForResult(t, taskID); rec.SuccessFlag != kie.Succeeded {
				t.Fatalf("edit task ended with %+v", rec)
			}
		})
	}
	if st := b.sim.Stats(); st.Uploads != 3 {
		t.Errorf("simulator stored %d uploads, want 3", st.Uploads)
	}
}

func TestSimFaults(t *testing.T) {
	ctx := context.Background()
	gen := func(c *kie.Client) error {
		_, err := c.Generate(ctx, kie.GenerateRequest{Prompt: "a quiet harbour"})
		return err
	}
	for _, sig := range []struct {
		name   string
		signal kiesim.Signal
	}{{"body code", kiesim.SignalBody}, {"HTTP status", kiesim.SignalHTTP}} {
		signal := sig.name
		b := setupSim(t, kiesim.Options{Seed: 3, ErrorSignal: sig.signal})

		t.Run(signal+"/bad key", func(t *testing.T) {
			bad, _ := kie.New(kie.Options{APIKey: "not-the-key", BaseURL: b.sim.APIURL, UploadURL: b.sim.UploadURL})
			if err := gen(bad); !kie.IsBadKey(err) {
				t.Errorf("signal %s: %v, want IsBadKey", signal, err)
			}
			if _, err := bad.Credits(ctx); !kie.IsBadKey(err) {
				t.Errorf("signal %s: credits %v, want IsBadKey", signal, err)
			}
		})

		t.Run(signal+"/rate limit", func(t *testing.T) {
			var limited error
			for i := 0; i < 25 && limited == nil; i++ {
				if err := gen(b.client); kie.IsRateLimited(err) {
					limited = err
				} else if err != nil {
					t.Fatalf("generate %d: %v", i, err)
				}
			}
			if limited == nil {
				t.Fatalf("signal %s: 25 generate calls in one instant were all accepted", signal)
			}
			if st := b.sim.Stats(); st.Accepted != 20 {
				t.Errorf("signal %s: %d accepted before the 429, want 20", signal, st.Accepted)
			}
			b.clock.Advance(10 * time.Second)
			if err := gen(b.client); err != nil {
				t.Errorf("signal %s: after the window passed: %v", signal, err)
			}
		})

		t.Run(signal+"/maintenance, disabled feature, no credits", func(t *testing.T) {
			b.sim.SetMaintenance(true)
			if err := gen(b.client); !kie.IsMaintenance(err) {
				t.Errorf("signal %s: %v, want IsMaintenance", signal, err)
			}
			b.sim.SetMaintenance(false)
			b.sim.SetFeatureDisabled(true)
			b.clock.Advance(10 * time.Second)
			if err := gen(b.client); !kie.IsFeatureDisabled(err) {
				t.Errorf("signal %s: %v, want IsFeatureDisabled", signal, err)
			}
			b.sim.SetFeatureDisabled(false)
			b.sim.SetCredits(0)
			if err := gen(b.client); !kie.IsOutOfCredits(err) {
				t.Errorf("signal %s: %v, want IsOutOfCredits", signal, err)
			}
		})
	}

	t.Run("CDN refuses Go's user agent, not ours", func(t *testing.T) {
		b := setupSim(t, kiesim.Options{Seed: 4})
		goUA, _ := kie.New(kie.Options{APIKey: b.sim.Key, BaseURL: b.sim.APIURL, UserAgent: "Go-http-client/1.1"})
		if err := gen(goUA); !kie.IsCDNRefused(err) || kie.IsBadKey(err) {
			t.Errorf("%v, want IsCDNRefused", err)
		}
		if err := gen(b.client); err != nil {
			t.Errorf("with kontextq's user agent: %v", err)
		}
	})
}

func TestSimTransientFaults(t *testing.T) {
	ctx := context.Background()
	b := setupSim(t, kiesim.Options{Seed: 5, TransientErrorRate: 1})
	if _, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "a kite"}); !kie.IsTransient(err) {
		t.Errorf("Generate under server errors: %v, want IsTransient", err)
	}
	if st := b.sim.Stats(); st.Accepted != 0 {
		t.Errorf("a failed generate created %d tasks", st.Accepted)
	}

	b = setupSim(t, kiesim.Options{Seed: 6, TruncateRate: 1})
	taskID, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "a kite"})
	if err != nil {
		t.Fatal(err)
	}
	rec := b.waitForResult(t, taskID)
	resp, err := b.client.Fetch(ctx, rec.ResultImageURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil || !kie.IsTransient(err) {
		t.Errorf("reading a cut-off image: %v, want a transient error", err)
	}
}

// Kie documents no Retry-After header; when one appears on a 429 or a 455, the client carries it
// to the caller in either signalling form.
func TestSimRetryAfterReachesTheCaller(t *testing.T) {
	for _, sig := range []kiesim.Signal{kiesim.SignalBody, kiesim.SignalHTTP} {
		b := setupSim(t, kiesim.Options{GenerateLimit: 1, GenerateWindow: 10 * time.Second, ErrorSignal: sig, RetryAfter: 7 * time.Second})
		ctx := context.Background()
		if _, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "first"}); err != nil {
			t.Fatal(err)
		}
		_, err := b.client.Generate(ctx, kie.GenerateRequest{Prompt: "second"})
		if !kie.IsRateLimited(err) || kie.RetryAfter(err) != 7*time.Second {
			t.Errorf("signal %v: got %v with RetryAfter %s, want a 429 asking for 7s", sig, err, kie.RetryAfter(err))
		}
		b.sim.SetMaintenance(true)
		_, err = b.client.Credits(ctx)
		if !kie.IsMaintenance(err) || kie.RetryAfter(err) != 7*time.Second {
			t.Errorf("signal %v: got %v with RetryAfter %s, want a 455 asking for 7s", sig, err, kie.RetryAfter(err))
		}
	}
}
