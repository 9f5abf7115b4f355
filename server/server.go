// Package server is kontextq's HTTP face: the job API for services that do not speak Go, the
// receiver of Kie's callbacks, the batch gallery, the asynq dashboard, Prometheus metrics and
// health checks, all on one http.Handler.
//
// The server holds no state of its own: jobs go through jobs.Enqueuer into the ledger and the
// queues, exactly as the loader puts them, and a callback only asks the workers for an immediate
// authoritative poll of the task it names (Checker), so a forged or replayed callback can at
// worst cost one status call; it never decides what is archived.
//
// Access has three levels. /healthz, /readyz and /kie/callback (which carries its own HMAC) are
// open. The job API always wants the bearer token, and so does the gallery (/gallery/), which
// shows the prompts and images, as a bearer token or as the password of HTTP basic auth, which is
// what a browser can send. /metrics and /monitoring are open when the server listens on loopback
// only, and otherwise want the token too, the same two ways. Without a token the server
// refuses to start unless it listens on loopback and is told explicitly (InsecureNoToken).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
)

// Checker asks for an immediate, deduplicated poll of a submitted job (*worker.Worker is one).
type Checker interface {
	Check(ctx context.Context, r jobs.Ref) error
}

// CreditSource reports the account's remaining credits (*kie.Client is one).
type CreditSource interface {
	Credits(ctx context.Context) (float64, error)
}

// PauseSource reports the account-wide pause every worker obeys (*worker.Worker is one):
// whether it holds, and its cause.
type PauseSource interface {
	AccountPause(ctx context.Context) (reason string, paused bool, err error)
}

// StatsSource is a rate limiter seen by the metrics (*ratelimit.Limiter is one).
type StatsSource interface {
	Stats() ratelimit.Stats
}

// Options configure a Server. Zero values take the defaults named.
type Options struct {
	// Redis is the client shared with the rest of the process; required.
	Redis redis.UniversalClient
	// RedisConnOpt is how the dashboard reaches the same Redis: asynqmon opens its own
	// connections and cannot take a client. Nil means no dashboard (/monitoring answers 503).
	RedisConnOpt asynq.RedisConnOpt
	// Namespace of the ledger and queues ("kontextq"); must match the workers'.
	Namespace string
	// Enqueuer puts API jobs into the ledger and the submit queue; required.
	Enqueuer *jobs.Enqueuer
	// Checker triggers the poll a callback asks for; required.
	Checker Checker
	// Metrics count this process's workers and callbacks (when nil, the server makes its own
	// NewSharedMetrics, so that callbacks reach the deployment's counters, and closes them).
	// Pass the same value as worker.Options.Observer to have this process's workers counted.
	Metrics *Metrics
	// Credits, when set, feeds the credits gauge, refreshed at most every CreditsEvery.
	Credits      CreditSource
	CreditsEvery time.Duration // 60 s
	// Limiters feed the rate gauges.
	Limiters []StatsSource
	// Pause feeds the account-paused gauge; without it the gauge is not exported.
	Pause PauseSource

	// APIToken is the bearer token callers present. Required unless InsecureNoToken.
	APIToken string
	// InsecureNoToken lets a server listening on loopback only run without a token: every
	// route is then open to anyone who can reach the machine's loopback interface.
	InsecureNoToken bool
	// Loopback says the server listens on a loopback address only (see IsLoopback); /metrics
	// and /monitoring are then open. Serve refuses an address that is not loopback.
	Loopback bool

	// HMACKey verifies Kie's signed callbacks (Kie's webhookHmacKey).
	HMACKey []byte
	// AllowUnsigned accepts callbacks without signature headers; they still only trigger a
	// poll. A callback whose signature is present but wrong is always refused.
	AllowUnsigned bool
	// CallbackWindow is how far a callback's timestamp may be from now (5 min).
	CallbackWindow time.Duration

	// ReadOnly makes the dashboard view-only.
	ReadOnly bool

	// Archive is where the gallery (/gallery/) reads images from; nil shows none.
	Archive archive.Store
	// Thumbs keeps the gallery's thumbnails; nil shows none.
	Thumbs *gallery.Thumbs
	// Prices are the credits an image of each model costs, for the gallery's spend.
	Prices map[string]float64
	// Rate is the account's generate rate (--rate), for the gallery's ETAs; zero shows none.
	Rate ratelimit.Rate

	// MaxJobBytes limits a single-job body (1 MiB); MaxBatchBytes an NDJSON body (64 MiB).
	MaxJobBytes   int64
	MaxBatchBytes int64

	Logger *slog.Logger     // slog.Default()
	Now    func() time.Time // time.Now
}

// String keeps the token and the HMAC key out of %v and %+v output.
func (o Options) String() string {
	return fmt.Sprintf("server.Options{Namespace:%q APIToken:%s HMACKey:%s Loopback:%t InsecureNoToken:%t AllowUnsigned:%t ReadOnly:%t}",
		o.Namespace, redact(o.APIToken != ""), redact(len(o.HMACKey) > 0), o.Loopback, o.InsecureNoToken, o.AllowUnsigned, o.ReadOnly)
}

// GoString keeps the secrets out of %#v output.
func (o Options) GoString() string { return o.String() }

func redact(set bool) string {
	if set {
		return "[redacted]"
	}
	return `""`
}

// ErrNoToken is returned by New for a server without an API token that is not allowed to run
// without one.
var ErrNoToken = errors.New("no API token: set KONTEXTQ_API_TOKEN (the HTTP API, and the dashboard and metrics when not on loopback, require it); " +
	"a server listening on loopback only may run without one with --insecure-no-token")

func (o *Options) defaults() error {
	switch {
	case o.Redis == nil:
		return errors.New("server: Options.Redis is required")
	case o.Enqueuer == nil:
		return errors.New("server: Options.Enqueuer is required")
	case o.Checker == nil:
		return errors.New("server: Options.Checker is required")
	case o.APIToken == "" && !(o.InsecureNoToken && o.Loopback):
		return ErrNoToken
	}
	if o.Namespace == "" {
		o.Namespace = "kontextq"
	}
	if o.CreditsEvery <= 0 {
		o.CreditsEvery = time.Minute
	}
	if o.CallbackWindow <= 0 {
		o.CallbackWindow = 5 * time.Minute
	}
	if o.MaxJobBytes <= 0 {
		o.MaxJobBytes = 1 << 20
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Route is one endpoint the server registers, as docs/openapi.yaml names it.
type Route struct {
	Method string
	Path   string // OpenAPI path template, e.g. /v1/jobs/{batch}/{id}
}

// Server is the HTTP server of one kontextq process.
type Server struct {
	o         Options
	log       *slog.Logger
	ledger    *jobs.Ledger
	mux       *http.ServeMux
	routes    []Route
	dashboard *asynqmon.HTTPHandler
	metrics   http.Handler
	credits   *creditCache
	insp      *asynq.Inspector
	token     tokenCheck
	bulk      chan struct{} // bounds the NDJSON bodies held in memory at once
	// ownMetrics: the server made o.Metrics and closes them.
	ownMetrics bool
	gallery    *gallery.Gallery
	prices     map[string]jobs.Credits // o.Prices in the ledger's unit
}

// New builds a Server. It fails with ErrNoToken when no token is configured and running
// without one is not allowed.
func New(o Options) (*Server, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	ownMetrics := o.Metrics == nil
	if ownMetrics {
		o.Metrics = NewSharedMetrics(o.Redis, o.Namespace, o.Logger)
	}
	s := &Server{
		o:          o,
		ownMetrics: ownMetrics,
		log:        o.Logger,
		ledger:     o.Enqueuer.Ledger(),
		mux:        http.NewServeMux(),
		token:      newTokenCheck(o.APIToken),
		bulk:       make(chan struct{}, 2),
		prices:     map[string]jobs.Credits{},
	}
	for m, p := range o.Prices {
		s.prices[m] = jobs.CreditsOf(p)
	}
	if o.RedisConnOpt != nil {
		s.dashboard = asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: o.RedisConnOpt, ReadOnly: o.ReadOnly})
	}
	s.metrics = s.newMetricsHandler()
	s.gallery = gallery.New(gallery.Options{Ledger: s.ledger, Store: o.Archive, Thumbs: o.Thumbs, Prices: o.Prices, Rate: o.Rate, Now: o.Now})

	s.handle("GET", "/healthz", open, http.HandlerFunc(s.healthz))
	s.handle("GET", "/readyz", open, http.HandlerFunc(s.readyz))
	s.handle("POST", "/kie/callback", open, http.HandlerFunc(s.callback))
	s.handle("GET", "/metrics", ops, s.metrics)
	s.handle("POST", "/v1/jobs", api, http.HandlerFunc(s.postJobs))
	s.handle("GET", "/v1/jobs/{batch}/{id}", api, http.HandlerFunc(s.getJob))
	s.handle("GET", "/v1/jobs/{id}", api, http.HandlerFunc(s.getJob))
	s.handle("GET", "/v1/batches/{batch}", api, http.HandlerFunc(s.getBatch))
	s.routeGallery()
	// The dashboard is a single-page app with its own JSON API under the same prefix, using
	// every method; it is documented as one route.
	s.routes = append(s.routes, Route{Method: "GET", Path: "/monitoring/"})
	s.mux.Handle("/monitoring/", s.guard(ops, http.HandlerFunc(s.serveDashboard)))
	return s, nil
}

// access is who may call a route.
type access int

const (
	open   access = iota // anyone
	api                  // the token holder, always
	ops                  // anyone on a loopback-only server, else the token holder
	browse               // the token holder, always, as a bearer token or a browser's basic auth
)

func (s *Server) handle(method, path string, a access, h http.Handler) {
	s.routes = append(s.routes, Route{Method: method, Path: path})
	s.mux.Handle(method+" "+path, s.guard(a, h))
}

// Routes lists the endpoints the server registers.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// ServeHTTP serves every route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// Close releases the dashboard's Redis connections and the metrics' inspector (not
// Options.Redis).
func (s *Server) Close() error {
	err := s.insp.Close()
	if s.ownMetrics {
		err = errors.Join(err, s.o.Metrics.Close())
	}
	if s.dashboard != nil {
		err = errors.Join(err, s.dashboard.Close())
	}
	return err
}

// String keeps the secrets out of %v output.
func (s *Server) String() string { return "server.Server{" + s.o.String() + "}" }

// GoString keeps the secrets out of %#v output.
func (s *Server) GoString() string { return s.String() }

// Serve listens on addr and serves until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, addr string) error {
	if s.o.Loopback && !IsLoopback(addr) {
		return fmt.Errorf("server: serve %s: the server was built for a loopback address only (its dashboard and metrics are open)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends, then shuts down gracefully, giving requests in
// flight up to 10 s. It closes ln.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	if s.o.Loopback && !IsLoopback(ln.Addr().String()) {
		_ = ln.Close()
		return fmt.Errorf("server: serve %s: the server was built for a loopback address only (its dashboard and metrics are open)", ln.Addr())
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// Long enough for a 64 MiB NDJSON body on a slow link.
		ReadTimeout:  5 * time.Minute,
		WriteTimeout: 5 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return fmt.Errorf("server: serve %s: %w", ln.Addr(), err)
}

// IsLoopback reports whether a listen address (host:port) accepts connections from this
// machine only. An empty host (":8080") means every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 only while Redis answers: without it the server can neither take jobs
// nor act on callbacks.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.o.Redis.Ping(ctx).Err(); err != nil {
		s.log.Warn("not ready: Redis does not answer", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "Redis does not answer"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	if s.dashboard == nil {
		writeError(w, http.StatusServiceUnavailable, "the dashboard is not configured in this process", nil)
		return
	}
	s.dashboard.ServeHTTP(w, r)
}
