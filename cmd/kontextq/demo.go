package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/server"
)

// demoFiles is the sample batch: generations in every ratio, format and model, and edits of a
// bundled picture (a local file, so the upload path runs too).
//
//go:embed demo/demo.jsonl demo/hills.png
var demoFiles embed.FS

// demoArchive is where the demo archives unless told otherwise.
const demoArchive = "./kontextq-demo"

func newDemoCmd() *cobra.Command {
	var keepServing bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "See kontextq work with nothing to set up: a sample batch through a local Kie simulator, archived to " + demoArchive,
		Long: `demo needs no account, key or Redis. It starts the Kie simulator and an in-memory Redis in
this process, runs a bundled sample batch (generations in several ratios, formats and models, and
edits of a bundled picture), serves the dashboard on --listen while it works, and archives every
image to --archive (default ` + demoArchive + `) as a real run would. It takes well under a
minute. Nothing reaches Kie.ai and nothing is paid: generated images are the simulator's test
patterns, edits are the bundled picture cropped, posterised, tinted and marked, and REDIS_URL and
the KIE_ settings are ignored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd, keepServing)
		},
	}
	cmd.Flags().BoolVar(&keepServing, "keep-serving", false, "keep the dashboard up after the batch, until interrupted")
	return cmd
}

// demoConfig is the configuration the demo runs with: the user's settings, except that Kie is
// the local simulator and Redis the in-memory one whatever the environment says, so the demo
// never touches a real account or a shared Redis.
func demoConfig(cmd *cobra.Command, getenv func(string) string) (config.Config, error) {
	env := func(k string) string {
		if k == "KONTEXTQ_ARCHIVE" && getenv(k) == "" {
			return demoArchive
		}
		return getenv(k)
	}
	cfg, err := config.Load(cmd.Flags(), env)
	if err != nil {
		return cfg, usageErr(fmt.Errorf("configuration:\n%w", err))
	}
	cfg.RedisURL = ""
	cfg.KieAPIKey = "demo-key"
	cfg.PublicURL = "" // no callbacks: the simulator is polled
	// The simulator is fast; a real task takes 5-30 s.
	cfg.FirstPoll, cfg.PollInterval = 2*time.Second, time.Second
	if cfg.LogLevel == "info" {
		cfg.LogLevel = "warn" // the demo's own lines say what happens
	}
	return cfg, nil
}

func runDemo(cmd *cobra.Command, keepServing bool) error {
	began := time.Now()
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	cfg, err := demoConfig(cmd, os.Getenv)
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg, cmd.ErrOrStderr())

	// Kie: the simulator, with Kie's own rate limit and quick generations.
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: starting the Kie simulator: %w", err)
	}
	simURL := "http://" + simLn.Addr().String()
	sim := kiesim.New(kiesim.Options{
		Key: cfg.KieAPIKey.Reveal(), PublicURL: simURL, Seed: time.Now().UnixNano(),
		GenerateLimit: cfg.Rate.Events, GenerateWindow: cfg.Rate.Per,
		GenTimeMedian: 3 * time.Second, GenTimeSigma: 0.4, ImageMaxSide: 512,
	})
	defer sim.Close()
	simSrv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go simSrv.Serve(simLn)
	defer simSrv.Close()
	cfg.KieBaseURL, cfg.KieUploadURL = simURL, simURL

	rdb, _, err := app.OpenRedisOrMemory(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	metrics := server.NewSharedMetrics(rdb, cfg.Namespace, log)
	defer metrics.Close()
	w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: store, Logger: log, Observer: metrics})
	if err != nil {
		return err
	}
	defer w.Close()
	enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention, Priority: jobs.Bulk})
	defer enq.Close()

	batchFile, err := writeDemoFiles(cfg.Archive)
	if err != nil {
		return err
	}
	// A new batch every time, so every run shows the whole flow.
	batch := "demo-" + time.Now().Format("20060102-150405")
	o := loadOptions{Path: batchFile, Batch: batch, Concurrency: 4}

	fmt.Fprintf(out, "kontextq demo: a Kie.ai simulator and an in-memory Redis in this process; nothing is paid.\n")
	chosen := cmd.Flags().Changed("listen") || os.Getenv("KONTEXTQ_LISTEN") != ""
	dashboard, stopServer, err := startDemoServer(ctx, cfg, app.ServeDeps{Redis: rdb, Checker: w, Limiters: w.Limiters, Metrics: metrics, Store: store, Logger: log}, chosen)
	if err != nil {
		return err
	}
	defer stopServer()
	rep, err := loadWithProgress(ctx, enq, o, io.Discard)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "batch %s: %d jobs (%s)\n", batch, rep.Valid, batchFile)
	fmt.Fprintf(out, "images:    %s\n", store.Location(batch))
	fmt.Fprintf(out, "dashboard: %s\n", dashboard)

	serr := workBatch(ctx, w, batch, cfg.Rate, time.Second, out)
	if ee := (*exitError)(nil); serr != nil && (!errors.As(serr, &ee) || ee.err != nil) {
		return serr // not the batch's outcome: interrupted, or Redis failed
	}
	fmt.Fprintf(out, "\ndone in %s: the images are in %s, each with a .json sidecar (its request, Kie's task, sha256).\n",
		time.Since(began).Round(time.Second), store.Location(batch))
	fmt.Fprintf(out, "Next, with your own key from kie.ai (each image is paid):\n  export KIE_API_KEY=...\n  kontextq run %s\n", batchFile)
	if !keepServing {
		fmt.Fprintf(out, "(The dashboard closes with the demo; kontextq demo --keep-serving keeps it up.)\n")
		return serr
	}
	fmt.Fprintf(out, "\nThe dashboard stays up at %s; Ctrl-C to stop.\n", dashboard)
	<-ctx.Done()
	return serr
}

// writeDemoFiles puts the sample batch and its picture where the user can look at them and run
// them again: in the archive's hidden .kontextq/demo directory for a local archive, else in a
// temporary directory. It returns the batch file's path.
func writeDemoFiles(archiveLoc string) (string, error) {
	var dir string
	if strings.Contains(archiveLoc, "://") && !strings.HasPrefix(archiveLoc, "file://") {
		d, err := os.MkdirTemp("", "kontextq-demo-")
		if err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
		dir = d
	} else {
		p, err := app.JournalPath(archiveLoc, os.Getenv) // <archive>/.kontextq/journal.jsonl
		if err != nil {
			return "", err
		}
		dir = filepath.Join(filepath.Dir(p), "demo")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	err := fs.WalkDir(demoFiles, "demo", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := demoFiles.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, d.Name()), b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("demo: writing the sample batch: %w", err)
	}
	abs, err := filepath.Abs(filepath.Join(dir, "demo.jsonl"))
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	return abs, nil
}

// startDemoServer serves the dashboard, metrics and API on cfg.Listen, on loopback only since the
// demo serves them without a token. When the address was not chosen and is taken (another
// program on 8080), a free port is used instead. It returns the dashboard's URL.
func startDemoServer(ctx context.Context, cfg config.Config, d app.ServeDeps, chosen bool) (string, func(), error) {
	if !server.IsLoopback(cfg.Listen) {
		return "", nil, usageErr(fmt.Errorf("--listen %s: the demo serves its dashboard without a token, so only on a loopback address (e.g. 127.0.0.1:8080)", cfg.Listen))
	}
	d.InsecureNoToken, d.ReadOnly = true, true
	addr, stop, err := app.StartServer(ctx, cfg, d)
	if err != nil && !chosen {
		cfg.Listen = "127.0.0.1:0"
		addr, stop, err = app.StartServer(ctx, cfg, d)
	}
	if err != nil {
		return "", nil, err
	}
	return "http://" + addr + "/monitoring/", stop, nil
}
