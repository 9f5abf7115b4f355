package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/server"
)

func newWorkerCmd() *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Work queued jobs until SIGTERM (run any number, on any number of machines)",
		Long: `worker submits, polls and archives the jobs queued in REDIS_URL under --namespace, by "kontextq
load" or the HTTP API, until SIGTERM or SIGINT. Any number of workers, on any number of machines,
share the account's --rate through Redis. A worker checks at start that it can write to a local
--archive, since a job it cannot archive has been paid for already.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openSession(cmd, true)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cfg, log, rdb := cmd.Context(), s.cfg, s.log, s.rdb
			store, kc, err := openWorkTargets(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer store.Close()
			m := server.NewSharedMetrics(rdb, cfg.Namespace, log)
			defer m.Close()
			w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: store, Kie: kc, Logger: log, Observer: m})
			if err != nil {
				return err
			}
			defer w.Close()
			if metricsAddr != "" {
				stop, err := serveWorkerMetrics(ctx, metricsAddr, m, rdb, log)
				if err != nil {
					return usageErr(fmt.Errorf("--listen %s: %w", metricsAddr, err))
				}
				defer stop()
			}
			log.Info("worker started", "namespace", cfg.Namespace, "archive", store.Location(""), "rate", cfg.Rate.String())
			err = w.Run(ctx)
			log.Info("worker stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&metricsAddr, "listen", "", "serve this process's own Prometheus metrics (kontextq_process_*: submissions, 429s, archive bytes) at http://ADDR/metrics, and health checks at /healthz and /readyz; "+
		"the deployment's totals are on serve's /metrics; "+
		"off when empty, and only this flag turns it on (KONTEXTQ_LISTEN, which serve shares, does not)")
	f.StringVar(&metricsAddr, "metrics-listen", "", "the same as --listen")
	_ = f.MarkDeprecated("metrics-listen", "use --listen")
	return cmd
}

// serveWorkerMetrics serves one worker process's own counters (kontextq_process_*), its build
// and its Go runtime; the deployment's counters and the queue and ledger gauges are served once
// per deployment by `kontextq serve`. Beside them, the health checks a supervisor probes:
// /healthz answers while the process runs, /readyz while Redis answers too.
func serveWorkerMetrics(ctx context.Context, addr string, m *server.Metrics, rdb redis.UniversalClient, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	reg.MustRegister(server.BuildInfo(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := rdb.Ping(pctx).Err(); err != nil {
			log.Warn("not ready: Redis does not answer", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"unavailable","error":"Redis does not answer"}`)
			return
		}
		fmt.Fprintln(w, `{"status":"ready"}`)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("worker metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
