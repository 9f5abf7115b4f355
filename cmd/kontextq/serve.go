package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/app"
)

// serveFlags are the server's switches; where it listens, its public URL and its secrets are
// settings (--listen, --public-url, KONTEXTQ_API_TOKEN, KIE_WEBHOOK_HMAC_KEY).
type serveFlags struct {
	insecureNoToken bool
	allowUnsigned   bool
	readOnly        bool
	thumbCache      string
}

func (f *serveFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.insecureNoToken, "insecure-no-token", false,
		"run without KONTEXTQ_API_TOKEN, every route open to anyone who can reach it (refused unless --listen is a loopback address)")
	fl.BoolVar(&f.allowUnsigned, "allow-unsigned-callbacks", false,
		"accept Kie callbacks without a signature (they only trigger a status poll; a wrong signature is still refused)")
	fl.BoolVar(&f.readOnly, "dashboard-read-only", false, "make the /monitoring dashboard view-only")
	fl.StringVar(&f.thumbCache, "thumb-cache", "", "directory where the gallery keeps the thumbnails it makes (default: kontextq/thumbs in the user's cache directory)")
}

func newServeCmd() *cobra.Command {
	var sf serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API, Kie callbacks, the dashboard (/monitoring), metrics and health checks",
		Long: `serve answers HTTP on --listen (default 127.0.0.1:8080) until SIGTERM:
  POST /v1/jobs, GET /v1/jobs/{batch}/{id}, GET /v1/batches/{batch}   the job API (docs/openapi.yaml)
  POST /kie/callback                                                   Kie's callbacks (--public-url + /kie/callback)
  /gallery/     the batches, and each batch's images with their prompts (images from --archive)
  /monitoring   the asynq dashboard        /metrics   Prometheus metrics
  /healthz      liveness                   /readyz    readiness (Redis answers)

The API and the gallery need a bearer token (KONTEXTQ_API_TOKEN); the dashboard and metrics need it
too unless the server listens on loopback only. A browser gives it as the basic-auth password.
Callbacks are verified with KIE_WEBHOOK_HMAC_KEY and only ever trigger a status poll. serve does
no work itself: run workers (kontextq worker) against the same Redis and namespace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openSession(cmd, true)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cfg, log, rdb := cmd.Context(), s.cfg, s.log, s.rdb
			// The worker is never run here: its Check only enqueues a poll for the workers.
			w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: app.NoStore{}, Logger: log})
			if err != nil {
				return err
			}
			defer w.Close()
			store, err := openArchiveToRead(ctx, cfg, log)
			if err != nil {
				return err
			}
			if store != nil {
				defer store.Close()
			}
			addr, stop, err := app.StartServer(ctx, cfg, app.ServeDeps{Redis: rdb, Checker: w, Limiters: w.Limiters, Credits: w.Kie, Logger: log,
				Store: store, ThumbCache: sf.thumbCache,
				InsecureNoToken: sf.insecureNoToken, AllowUnsigned: sf.allowUnsigned, ReadOnly: sf.readOnly})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kontextq serving on http://%s (API /v1, gallery /gallery/, dashboard /monitoring, metrics /metrics)\n", addr)
			<-ctx.Done()
			stop()
			log.Info("server stopped")
			return nil
		},
	}
	sf.register(cmd)
	return cmd
}
