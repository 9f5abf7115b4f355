package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/server"
)

// serveFlags are the server's switches; where it listens, its public URL and its secrets are
// settings (--listen, --public-url, KONTEXTQ_API_TOKEN, KIE_WEBHOOK_HMAC_KEY).
type serveFlags struct {
	insecureNoToken bool
	allowUnsigned   bool
	readOnly        bool
}

func (f *serveFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.insecureNoToken, "insecure-no-token", false,
		"run without KONTEXTQ_API_TOKEN, every route open to anyone who can reach it (refused unless --listen is a loopback address)")
	fl.BoolVar(&f.allowUnsigned, "allow-unsigned-callbacks", false,
		"accept Kie callbacks without a signature (they only trigger a status poll; a wrong signature is still refused)")
	fl.BoolVar(&f.readOnly, "dashboard-read-only", false, "make the /monitoring dashboard view-only")
}

func newServeCmd() *cobra.Command {
	var sf serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API, Kie callbacks, the dashboard (/monitoring), metrics and health checks",
		Long: `serve answers HTTP on --listen (default 127.0.0.1:8080) until SIGTERM:
  POST /v1/jobs, GET /v1/jobs/{batch}/{id}, GET /v1/batches/{batch}   the job API (docs/openapi.yaml)
  POST /kie/callback                                                   Kie's callbacks (--public-url + /kie/callback)
  /monitoring   the asynq dashboard        /metrics   Prometheus metrics
  /healthz      liveness                   /readyz    readiness (Redis answers)

The API needs a bearer token (KONTEXTQ_API_TOKEN); the dashboard and metrics need it too unless
the server listens on loopback only, and a browser may give it as the basic-auth password.
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
			w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: noStore{}, Logger: log})
			if err != nil {
				return err
			}
			defer w.Close()
			addr, stop, err := startServer(ctx, cfg, serveDeps{Redis: rdb, Checker: w, Limiters: w.Limiters, Credits: w.Kie, Log: log, Flags: sf})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kontextq serving on http://%s (API /v1, dashboard /monitoring, metrics /metrics)\n", addr)
			<-ctx.Done()
			stop()
			log.Info("server stopped")
			return nil
		},
	}
	sf.register(cmd)
	return cmd
}

// serveDeps are what a command shares with the server it starts.
type serveDeps struct {
	Redis    redis.UniversalClient // required
	Checker  server.Checker        // required: the process's *worker.Worker
	Limiters app.Limiters          // for the rate gauges
	Credits  *kie.Client           // for the credits gauge; optional
	Metrics  *server.Metrics       // the workers' counters (the worker's Observer too); optional
	Log      *slog.Logger
	Flags    serveFlags
}

// startServer starts serving on cfg.Listen in the background and returns the address it
// listens on (the real port when cfg.Listen asks for port 0). stop shuts the server down
// gracefully and waits for it. run, demo and serve share it.
func startServer(ctx context.Context, cfg config.Config, d serveDeps) (addr string, stop func(), err error) {
	loopback := server.IsLoopback(cfg.Listen)
	if d.Flags.insecureNoToken && !loopback {
		return "", nil, usageErr(fmt.Errorf("--insecure-no-token needs --listen on a loopback address (such as 127.0.0.1:8080), not %s", cfg.Listen))
	}
	if cfg.PublicURL != "" && cfg.WebhookHMACKey == "" && !d.Flags.allowUnsigned {
		d.Log.Warn("--public-url is set but KIE_WEBHOOK_HMAC_KEY is not: Kie's callbacks will be refused (set the key, or --allow-unsigned-callbacks); polling still finds every result")
	}
	enq := jobs.NewEnqueuer(d.Redis, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention})
	o := server.Options{
		Redis: d.Redis, RedisConnOpt: redisConnOpt(d.Redis), Namespace: cfg.Namespace,
		Enqueuer: enq, Checker: d.Checker, Metrics: d.Metrics,
		APIToken: cfg.APIToken.Reveal(), InsecureNoToken: d.Flags.insecureNoToken, Loopback: loopback,
		HMACKey: []byte(cfg.WebhookHMACKey.Reveal()), AllowUnsigned: d.Flags.allowUnsigned,
		ReadOnly: d.Flags.readOnly, Logger: d.Log,
	}
	if d.Credits != nil {
		o.Credits = d.Credits
	}
	for _, l := range d.Limiters.All() {
		if l != nil {
			o.Limiters = append(o.Limiters, l)
		}
	}
	srv, err := server.New(o)
	if err != nil {
		enq.Close()
		if errors.Is(err, server.ErrNoToken) {
			return "", nil, usageErr(err)
		}
		return "", nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		srv.Close()
		enq.Close()
		return "", nil, usageErr(fmt.Errorf("--listen %s: %w", cfg.Listen, err))
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeListener(sctx, ln); err != nil {
			d.Log.Error("HTTP server stopped", "err", err)
		}
	}()
	addr = ln.Addr().String()
	d.Log.Info("serving", "addr", addr, "loopback_only", loopback, "dashboard_read_only", d.Flags.readOnly)
	return addr, func() {
		cancel()
		<-done
		_ = srv.Close()
		_ = enq.Close()
	}, nil
}

// redisConnOpt describes rdb's connection for the dashboard, which opens its own connections
// and cannot share a client.
func redisConnOpt(rdb redis.UniversalClient) asynq.RedisConnOpt {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		o := c.Options()
		return asynq.RedisClusterClientOpt{Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig}
	case interface{ Options() *redis.Options }: // *redis.Client, and wrappers of one
		o := c.Options()
		return asynq.RedisClientOpt{Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password,
			DB: o.DB, TLSConfig: o.TLSConfig, PoolSize: 4}
	}
	return nil
}

// noStore is the archive of a process that archives nothing: serve builds a worker only to
// schedule checks, and opening the real store there would create directories or need cloud
// credentials for nothing.
type noStore struct{}

var errNoStore = errors.New("this process does not archive (kontextq serve); workers do")

func (noStore) Put(context.Context, string, io.Reader, archive.Info) error { return errNoStore }
func (noStore) Open(context.Context, string) (io.ReadCloser, error)        { return nil, errNoStore }
func (noStore) Stat(context.Context, string) (archive.Info, error)         { return archive.Info{}, errNoStore }
func (noStore) Delete(context.Context, string) error                       { return errNoStore }
func (noStore) List(context.Context, string, func(string, archive.Info) error) error {
	return errNoStore
}
func (noStore) Location(key string) string { return strings.TrimSpace("(not archived here) " + key) }
func (noStore) Close() error               { return nil }
