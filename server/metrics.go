package server

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/worker"
)

// Metrics count what this process's workers (and its callback receiver) did. Each event is
// counted twice: in this process's own series, named kontextq_process_* (served by a worker's
// --metrics-listen, and by serve), and, for Metrics made by NewSharedMetrics, in a small Redis
// hash of the namespace from which serve's /metrics reports the deployment's totals under the
// plain names (kontextq_submissions_total, ...), whichever process did the work. The two never
// share a name: summing kontextq_process_* over processes gives the deployment's figures, and
// summing the deployment's series over serve replicas counts each event once per replica.
//
// It is a worker.Observer: pass it as worker.Options.Observer and as Options.Metrics.
type Metrics struct {
	submissions    prometheus.Counter
	rateLimited    *prometheus.CounterVec
	generation     prometheus.Histogram
	archivedImages prometheus.Counter
	archivedBytes  prometheus.Counter
	failures       *prometheus.CounterVec
	sweeps         prometheus.Counter
	swept          *prometheus.CounterVec
	callbacks      *prometheus.CounterVec

	shared *sharedCounts // nil: this process's series only
}

var _ worker.Observer = (*Metrics)(nil)

// generationBuckets bound kontextq_generation_seconds, in both its forms.
var generationBuckets = []float64{2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900}

// NewMetrics returns zeroed counters of this process only.
func NewMetrics() *Metrics {
	return &Metrics{
		submissions: prometheus.NewCounter(prometheus.CounterOpts{Name: "kontextq_process_submissions_total",
			Help: "Generate calls Kie accepted (paid tasks), made by this process."}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kontextq_process_rate_limited_total",
			Help: "429 answers from Kie to this process, by endpoint (generate, record-info, upload, download, download-url)."}, []string{"endpoint"}),
		generation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kontextq_process_generation_seconds",
			Help:    "Time from a task's submission to the poll (by this process) that saw it succeed.",
			Buckets: generationBuckets}),
		archivedImages: prometheus.NewCounter(prometheus.CounterOpts{Name: "kontextq_process_archived_images_total",
			Help: "Images this process archived."}),
		archivedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kontextq_process_archived_bytes_total",
			Help: "Bytes of images this process archived."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kontextq_process_job_failures_total",
			Help: "Jobs this process ended failed, by reason."}, []string{"reason"}),
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{Name: "kontextq_process_sweeps_total",
			Help: "Sweeps run by this process."}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kontextq_process_swept_total",
			Help: "Work this process's sweeps re-enqueued, by kind (archive, check)."}, []string{"kind"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kontextq_process_callbacks_total",
			Help: "Kie callbacks this process received, by outcome (" + strings.Join(callbackOutcomes, ", ") + ")."}, []string{"outcome"}),
	}
}

// NewSharedMetrics returns counters that are also added, about once a second, to the
// namespace's deployment counters in Redis. Close them to add what is left.
func NewSharedMetrics(rdb redis.UniversalClient, namespace string, log *slog.Logger) *Metrics {
	m := NewMetrics()
	m.shared = newSharedCounts(rdb, namespace, log)
	return m
}

// Flush adds the counts not yet in Redis now (nothing for Metrics of this process only).
func (m *Metrics) Flush(ctx context.Context) error {
	if m.shared == nil {
		return nil
	}
	return m.shared.flush(ctx)
}

// Close stops the background flushing and adds what is left to Redis.
func (m *Metrics) Close() error {
	if m.shared == nil {
		return nil
	}
	return m.shared.close()
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.submissions, m.rateLimited, m.generation, m.archivedImages, m.archivedBytes,
		m.failures, m.sweeps, m.swept, m.callbacks}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) add(field string, n int64) {
	if m.shared != nil && n != 0 {
		m.shared.add(field, n)
	}
}

// Submitted implements worker.Observer.
func (m *Metrics) Submitted() { m.submissions.Inc(); m.add(fSubmissions, 1) }

// RateLimited implements worker.Observer.
func (m *Metrics) RateLimited(endpoint string) {
	m.rateLimited.WithLabelValues(endpoint).Inc()
	m.add(fRateLimited+endpoint, 1)
}

// Generated implements worker.Observer.
func (m *Metrics) Generated(d time.Duration) {
	m.generation.Observe(d.Seconds())
	m.add(fGenCount, 1)
	m.add(fGenSumMS, d.Milliseconds())
	m.add(fGenBucket+generationBucket(d.Seconds()), 1)
}

// Archived implements worker.Observer.
func (m *Metrics) Archived(bytes int64) {
	m.archivedImages.Inc()
	m.archivedBytes.Add(float64(bytes))
	m.add(fArchivedImages, 1)
	m.add(fArchivedBytes, bytes)
}

// Failed implements worker.Observer.
func (m *Metrics) Failed(reason jobs.Reason) {
	m.failures.WithLabelValues(string(reason)).Inc()
	m.add(fFailures+string(reason), 1)
}

// Swept implements worker.Observer.
func (m *Metrics) Swept(r worker.SweepReport) {
	m.sweeps.Inc()
	m.swept.WithLabelValues("archive").Add(float64(r.Archives))
	m.swept.WithLabelValues("check").Add(float64(r.Checks))
	m.add(fSweeps, 1)
	m.add(fSwept+"archive", int64(r.Archives))
	m.add(fSwept+"check", int64(r.Checks))
}

// callback counts a Kie callback by outcome.
func (m *Metrics) callback(outcome string) {
	m.callbacks.WithLabelValues(outcome).Inc()
	m.add(fCallbacks+outcome, 1)
}

// Bounds on the scrape-time reading of the ledger, so that a deployment with thousands of
// batches does not make every scrape slow or every time series list endless.
const (
	maxBatchesRead  = 1000 // batches whose counters are read per scrape
	maxBatchSeries  = 50   // unfinished batches given their own series
	scrapeTimeout   = 5 * time.Second
	creditsTimeout  = 10 * time.Second
	farFutureExpiry = 100 * 365 * 24 * time.Hour
)

var (
	jobsDesc = prometheus.NewDesc("kontextq_jobs",
		"Jobs per state, summed over the batches read (see kontextq_batches).", []string{"state"}, nil)
	batchJobsDesc = prometheus.NewDesc("kontextq_batch_jobs",
		"Jobs per state of an unfinished batch (at most 50 batches, by name).", []string{"batch", "state"}, nil)
	batchesDesc = prometheus.NewDesc("kontextq_batches",
		"Batches in the ledger: finished, unfinished, or unread (beyond the 1000 read per scrape).", []string{"status"}, nil)
	expiryDesc = prometheus.NewDesc("kontextq_unarchived_soonest_expiry_timestamp_seconds",
		"When the soonest-expiring generated but unarchived result is assumed gone (absent when none).", nil, nil)
	rateDesc = prometheus.NewDesc("kontextq_rate_current_per_second",
		"The account's adaptive rate as this process last saw it, by limiter.", []string{"limiter"}, nil)
	rateCeilingDesc = prometheus.NewDesc("kontextq_rate_configured_per_second",
		"The configured ceiling of the rate, by limiter.", []string{"limiter"}, nil)
	tokensDesc = prometheus.NewDesc("kontextq_rate_tokens_total",
		"Limiter decisions in this process, by limiter and outcome (granted, denied, throttled, error).", []string{"limiter", "outcome"}, nil)
	creditsDesc = prometheus.NewDesc("kontextq_kie_credits",
		"Kie credits left, refreshed at most once a minute (absent until first read).", nil, nil)
	pausedDesc = prometheus.NewDesc("kontextq_account_paused",
		"1 while Kie refuses the account (bad key, out of credits, maintenance, feature disabled) and no worker submits, with the reason; 0 otherwise.", []string{"reason"}, nil)
	waitingDesc = prometheus.NewDesc("kontextq_waiting_jobs",
		"Jobs waiting in line for submission, outside asynq's submit queues, by priority class.", []string{"priority"}, nil)
	scrapeErrDesc = prometheus.NewDesc("kontextq_scrape_errors",
		"1 when part of the ledger could not be read for this scrape.", nil, nil)
)

// ledgerCollector reads the shared state at scrape time.
type ledgerCollector struct{ s *Server }

func (c ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, batchJobsDesc, batchesDesc, expiryDesc, rateDesc, rateCeilingDesc, tokensDesc, creditsDesc, pausedDesc, waitingDesc, scrapeErrDesc} {
		ch <- d
	}
}

func (c ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	failed := 0.0
	fail := func(what string, err error) {
		s.log.Warn("metrics: reading "+what, "err", err)
		failed = 1
	}

	if waiting, err := s.ledger.Waiting(ctx); err != nil {
		fail("jobs in line", err)
	} else {
		by := map[jobs.Priority]int64{}
		for _, w := range waiting {
			by[w.Priority] += w.Jobs
		}
		for _, p := range jobs.Priorities {
			ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(by[p]), string(p))
		}
	}
	if batches, err := s.ledger.Batches(ctx); err != nil {
		fail("batches", err)
	} else {
		sort.Strings(batches)
		read := batches[:min(len(batches), maxBatchesRead)]
		var total jobs.Counts
		finished, unfinished, series := 0, 0, 0
		for _, b := range read {
			n, err := s.ledger.Counts(ctx, b)
			if err != nil {
				fail("batch counts", err)
				break
			}
			total.Queued += n.Queued
			total.Submitted += n.Submitted
			total.Generated += n.Generated
			total.Archived += n.Archived
			total.Failed += n.Failed
			if n.Done() {
				finished++
				continue
			}
			unfinished++
			if series < maxBatchSeries {
				series++
				for st, v := range countsByState(n) {
					ch <- prometheus.MustNewConstMetric(batchJobsDesc, prometheus.GaugeValue, float64(v), b, string(st))
				}
			}
		}
		for st, v := range countsByState(total) {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(v), string(st))
		}
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(finished), "finished")
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(unfinished), "unfinished")
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(len(batches)-len(read)), "unread")
	}

	if _, exps, err := s.ledger.Expiring(ctx, s.o.Now().Add(farFutureExpiry), 1); err != nil {
		fail("expiry index", err)
	} else if len(exps) > 0 {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(exps[0].UnixMilli())/1000)
	}

	for _, l := range s.o.Limiters {
		st := l.Stats()
		ch <- prometheus.MustNewConstMetric(rateDesc, prometheus.GaugeValue, st.CurrentRate, st.Name)
		ch <- prometheus.MustNewConstMetric(rateCeilingDesc, prometheus.GaugeValue, st.ConfiguredRate, st.Name)
		for outcome, v := range map[string]int64{"granted": st.Granted, "denied": st.Denied, "throttled": st.Throttled, "error": st.Errors} {
			ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.CounterValue, float64(v), st.Name, outcome)
		}
	}

	if s.o.Pause != nil {
		if reason, paused, err := s.o.Pause.AccountPause(ctx); err != nil {
			fail("account pause", err)
		} else if paused {
			ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, 1, reason)
		} else {
			ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, 0, "")
		}
	}

	if v, ok := s.credits.get(s.o.Now()); ok {
		ch <- prometheus.MustNewConstMetric(creditsDesc, prometheus.GaugeValue, v)
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, failed)
}

func countsByState(c jobs.Counts) map[jobs.State]int64 {
	return map[jobs.State]int64{jobs.Queued: c.Queued, jobs.Submitted: c.Submitted, jobs.Generated: c.Generated,
		jobs.Archived: c.Archived, jobs.Failed: c.Failed}
}

// creditCache keeps the last credits figure. Asking Kie is slow and spends an API call, so a
// scrape never waits for it: it reports the cached value and, when that is older than every,
// starts one refresh in the background.
type creditCache struct {
	src   CreditSource
	every time.Duration
	log   interface{ Warn(string, ...any) }

	mu       sync.Mutex
	value    float64
	ok       bool
	tried    time.Time
	fetching bool
}

func (c *creditCache) get(now time.Time) (float64, bool) {
	if c == nil || c.src == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fetching && (c.tried.IsZero() || now.Sub(c.tried) >= c.every) {
		c.fetching, c.tried = true, now
		go c.refresh()
	}
	return c.value, c.ok
}

func (c *creditCache) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), creditsTimeout)
	defer cancel()
	v, err := c.src.Credits(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetching = false
	if err != nil {
		c.log.Warn("metrics: reading Kie credits", "err", err)
		return
	}
	c.value, c.ok = v, true
}

// newMetricsHandler builds /metrics: Go and process metrics, the build, asynq's queue metrics,
// this process's counters, the deployment's counters and the ledger gauges, in a registry of this server's own.
func (s *Server) newMetricsHandler() http.Handler {
	s.credits = &creditCache{src: s.o.Credits, every: s.o.CreditsEvery, log: s.log}
	s.insp = asynq.NewInspectorFromRedisClient(s.o.Redis)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		BuildInfo(),
		asynqmetrics.NewQueueMetricsCollector(s.insp),
		s.o.Metrics,
		ledgerCollector{s},
		deploymentCollector{rdb: s.o.Redis, key: countsKey(s.o.Namespace), log: s.log},
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: 20 * time.Second})
}
