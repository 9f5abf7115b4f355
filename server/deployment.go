package server

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/internal/buildinfo"
	"github.com/kontextq/kontextq/jobs"
)

// The deployment's counters live in one Redis hash per namespace, <namespace>:counts. Every
// process adds its increments about once a second (HINCRBY, one pipeline), and serve's /metrics
// reads the hash at scrape time. A process that dies loses at most its last second of counts;
// a Redis that loses its data resets them, which Prometheus reads as a counter reset.

// Fields of the counts hash; a label value follows the "|".
const (
	fSubmissions    = "submissions"
	fRateLimited    = "rate_limited|"
	fArchivedImages = "archived_images"
	fArchivedBytes  = "archived_bytes"
	fFailures       = "failures|"
	fSweeps         = "sweeps"
	fSwept          = "swept|"
	fCallbacks      = "callbacks|"
	fGenCount       = "gen_count"
	fGenSumMS       = "gen_sum_ms"
	fGenBucket      = "gen_le|" // per bucket, not cumulative; "+Inf" for the rest
)

// flushEvery is how often a process adds its counts to Redis.
const flushEvery = time.Second

var callbackOutcomes = []string{"accepted", "duplicate", "unknown_task", "forged", "stale", "malformed", "unsigned"}

func countsKey(namespace string) string { return namespace + ":counts" }

// generationBucket names the smallest bucket holding v seconds.
func generationBucket(v float64) string {
	for _, b := range generationBuckets {
		if v <= b {
			return strconv.FormatFloat(b, 'g', -1, 64)
		}
	}
	return "+Inf"
}

// sharedCounts batches a process's increments and adds them to the namespace's hash.
type sharedCounts struct {
	rdb redis.UniversalClient
	key string
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]int64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newSharedCounts(rdb redis.UniversalClient, namespace string, log *slog.Logger) *sharedCounts {
	if log == nil {
		log = slog.Default()
	}
	s := &sharedCounts{rdb: rdb, key: countsKey(namespace), log: log, pending: map[string]int64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *sharedCounts) add(field string, n int64) {
	s.mu.Lock()
	s.pending[field] += n
	s.mu.Unlock()
}

func (s *sharedCounts) loop() {
	defer close(s.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.flush(ctx)
		cancel()
		// Counts that could not be added wait for the next flush; say so once per outage.
		if err != nil && !failing {
			s.log.Warn("metrics: adding this process's counts to Redis failed; they are kept for the next try", "err", err)
		}
		failing = err != nil
	}
}

// flush adds the pending increments; on failure they are put back for the next one. A pipeline
// that fails halfway may have added some of them: they are counted again, a rare overcount
// rather than a loss.
func (s *sharedCounts) flush(ctx context.Context) error {
	s.mu.Lock()
	p := s.pending
	s.pending = map[string]int64{}
	s.mu.Unlock()
	if len(p) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for f, n := range p {
			pl.HIncrBy(ctx, s.key, f, n)
		}
		return nil
	})
	if err != nil {
		s.mu.Lock()
		for f, n := range p {
			s.pending[f] += n
		}
		s.mu.Unlock()
	}
	return err
}

func (s *sharedCounts) close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.flush(ctx)
	})
	return err
}

var (
	dSubmissions = prometheus.NewDesc("kontextq_submissions_total",
		"Generate calls Kie accepted (paid tasks), by every process of the deployment.", nil, nil)
	dRateLimited = prometheus.NewDesc("kontextq_rate_limited_total",
		"429 answers from Kie to the deployment, by endpoint (generate, record-info, upload, download, download-url).", []string{"endpoint"}, nil)
	dArchivedImages = prometheus.NewDesc("kontextq_archived_images_total",
		"Images the deployment archived.", nil, nil)
	dArchivedBytes = prometheus.NewDesc("kontextq_archived_bytes_total",
		"Bytes of images the deployment archived.", nil, nil)
	dFailures = prometheus.NewDesc("kontextq_job_failures_total",
		"Jobs the deployment's workers ended failed, by reason.", []string{"reason"}, nil)
	dSweeps = prometheus.NewDesc("kontextq_sweeps_total",
		"Sweeps run by any process of the deployment (about one per sweep interval while any worker runs).", nil, nil)
	dSwept = prometheus.NewDesc("kontextq_swept_total",
		"Work the deployment's sweeps re-enqueued, by kind (archive, check).", []string{"kind"}, nil)
	dCallbacks = prometheus.NewDesc("kontextq_callbacks_total",
		"Kie callbacks the deployment received, by outcome ("+strings.Join(callbackOutcomes, ", ")+").", []string{"outcome"}, nil)
	dGeneration = prometheus.NewDesc("kontextq_generation_seconds",
		"Time from a task's submission to the poll that saw it succeed, over the deployment.", nil, nil)
	dCountsErr = prometheus.NewDesc("kontextq_deployment_counts_errors",
		"1 when the deployment's counters could not be read from Redis for this scrape (they are then absent).", nil, nil)
)

// deploymentCollector reads the namespace's counts hash at scrape time. Label values that have
// not happened yet are reported as 0, so that alerts on increase() see a series from the start.
type deploymentCollector struct {
	rdb redis.UniversalClient
	key string
	log *slog.Logger
}

func (c deploymentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dSubmissions, dRateLimited, dArchivedImages, dArchivedBytes, dFailures,
		dSweeps, dSwept, dCallbacks, dGeneration, dCountsErr} {
		ch <- d
	}
}

func (c deploymentCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	h, err := c.rdb.HGetAll(ctx, c.key).Result()
	if err != nil {
		c.log.Warn("metrics: reading the deployment's counters", "err", err)
		ch <- prometheus.MustNewConstMetric(dCountsErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(dCountsErr, prometheus.GaugeValue, 0)
	n := func(f string) float64 { v, _ := strconv.ParseInt(h[f], 10, 64); return float64(v) }
	counter := func(d *prometheus.Desc, f string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, n(f))
	}
	// labelled emits one series per label value found under prefix, and known ones as 0.
	labelled := func(d *prometheus.Desc, prefix string, known []string) {
		vals := map[string]float64{}
		for _, k := range known {
			vals[k] = 0
		}
		for f := range h {
			if v, ok := strings.CutPrefix(f, prefix); ok && v != "" {
				vals[v] = n(f)
			}
		}
		for _, v := range slices.Sorted(maps.Keys(vals)) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, vals[v], v)
		}
	}
	counter(dSubmissions, fSubmissions)
	counter(dArchivedImages, fArchivedImages)
	counter(dArchivedBytes, fArchivedBytes)
	counter(dSweeps, fSweeps)
	labelled(dRateLimited, fRateLimited, []string{"generate", "record-info", "upload", "download", "download-url"})
	labelled(dFailures, fFailures, []string{string(jobs.Rejected), string(jobs.GenerationFailed), string(jobs.Expired),
		string(jobs.Cancelled), string(jobs.Interrupted), string(jobs.Errored)})
	labelled(dSwept, fSwept, []string{"archive", "check"})
	labelled(dCallbacks, fCallbacks, callbackOutcomes)

	buckets := map[float64]uint64{}
	var cum uint64
	for _, b := range generationBuckets {
		cum += uint64(n(fGenBucket + strconv.FormatFloat(b, 'g', -1, 64)))
		buckets[b] = cum
	}
	ch <- prometheus.MustNewConstHistogram(dGeneration, uint64(n(fGenCount)), n(fGenSumMS)/1000, buckets)
}

// BuildInfo is kontextq_build_info{version,revision,go} 1: which kontextq answers.
func BuildInfo() prometheus.Collector {
	in := buildinfo.Read()
	rev := in.Revision
	if in.Modified && rev != "" {
		rev += "-modified"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kontextq_build_info",
		Help:        "Always 1; its labels say which kontextq this process runs (from the binary's build information).",
		ConstLabels: prometheus.Labels{"version": in.Version, "revision": rev, "go": in.Go}})
	g.Set(1)
	return g
}
