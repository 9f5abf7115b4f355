package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/redisconn"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/server"
)

// ServeDeps are what a process shares with the HTTP server it starts.
type ServeDeps struct {
	Redis    redis.UniversalClient // required
	Checker  server.Checker        // required: the process's worker
	Limiters Limiters              // for the rate gauges
	Credits  *kie.Client           // for the credits gauge; optional
	Metrics  *server.Metrics       // the workers' counters (the worker's Observer too); optional
	Logger   *slog.Logger

	// Store is the archive the gallery shows images from (nil: none); ThumbCache the directory
	// of its thumbnails (the user's cache directory when empty).
	Store      archive.Store
	ThumbCache string

	// InsecureNoToken serves without KONTEXTQ_API_TOKEN (loopback only); AllowUnsigned accepts
	// unsigned Kie callbacks; ReadOnly makes the dashboard view-only.
	InsecureNoToken, AllowUnsigned, ReadOnly bool
}

// StartServer serves on cfg.Listen in the background and returns the address it listens on (the
// real port when cfg.Listen asks for port 0). stop shuts the server down gracefully and waits for
// it. run, demo and serve share it.
func StartServer(ctx context.Context, cfg config.Config, d ServeDeps) (addr string, stop func(), err error) {
	loopback := server.IsLoopback(cfg.Listen)
	if d.InsecureNoToken && !loopback {
		return "", nil, configErr(fmt.Errorf("--insecure-no-token needs --listen on a loopback address (such as 127.0.0.1:8080), not %s", cfg.Listen))
	}
	if cfg.PublicURL != "" && cfg.WebhookHMACKey == "" && !d.AllowUnsigned {
		d.Logger.Warn("--public-url is set but KIE_WEBHOOK_HMAC_KEY is not: Kie's callbacks will be refused (set the key, or --allow-unsigned-callbacks); polling still finds every result")
	}
	enq := jobs.NewEnqueuer(d.Redis, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention})
	o := server.Options{
		Redis: d.Redis, RedisConnOpt: redisconn.ConnOpt(d.Redis), Namespace: cfg.Namespace,
		Enqueuer: enq, Checker: d.Checker, Metrics: d.Metrics,
		APIToken: cfg.APIToken.Reveal(), InsecureNoToken: d.InsecureNoToken, Loopback: loopback,
		HMACKey: []byte(cfg.WebhookHMACKey.Reveal()), AllowUnsigned: d.AllowUnsigned,
		ReadOnly: d.ReadOnly, Logger: d.Logger,
	}
	if d.Credits != nil {
		o.Credits = d.Credits
	}
	o.Pause, _ = d.Checker.(server.PauseSource)
	if err := galleryOptions(cfg, d, &o); err != nil {
		enq.Close()
		return "", nil, err
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
			return "", nil, configErr(err)
		}
		return "", nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		srv.Close()
		enq.Close()
		return "", nil, configErr(fmt.Errorf("--listen %s: %w", cfg.Listen, err))
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeListener(sctx, ln); err != nil {
			d.Logger.Error("HTTP server stopped", "err", err)
		}
	}()
	addr = ln.Addr().String()
	d.Logger.Info("serving", "addr", addr, "loopback_only", loopback, "dashboard_read_only", d.ReadOnly)
	return addr, func() {
		cancel()
		<-done
		_ = srv.Close()
		_ = enq.Close()
	}, nil
}

// NoStore is the archive of a process that archives nothing: serve builds a worker only to
// schedule checks, and opening the real store there would create directories or need cloud
// credentials for nothing. Every call but Location and Close fails.
type NoStore struct{}

var errNoStore = errors.New("this process does not archive (kontextq serve); workers do")

func (NoStore) Put(context.Context, string, io.Reader, archive.Info) error { return errNoStore }
func (NoStore) Open(context.Context, string) (io.ReadCloser, error)        { return nil, errNoStore }
func (NoStore) Stat(context.Context, string) (archive.Info, error)         { return archive.Info{}, errNoStore }
func (NoStore) Delete(context.Context, string) error                       { return errNoStore }
func (NoStore) List(context.Context, string, func(string, archive.Info) error) error {
	return errNoStore
}
func (NoStore) Location(key string) string { return strings.TrimSpace("(not archived here) " + key) }
func (NoStore) Close() error               { return nil }
