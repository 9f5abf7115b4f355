package worker

import (
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// Observer receives the worker's events, for metrics. Gauges that live in Redis (jobs per state,
// the soonest expiry) are read at scrape time instead.
type Observer interface {
	// Submitted is called for every generate call Kie accepted (a paid task).
	Submitted()
	// RateLimited is called for every 429 Kie answered; endpoint is one of the Endpoint values
	// ("generate", "record-info", "upload", "download", "download-url").
	RateLimited(endpoint string)
	// Generated is called when a task succeeds, with the time from its submission.
	Generated(sinceSubmit time.Duration)
	// Archived is called for every image archived, with its size.
	Archived(bytes int64)
	// Failed is called for every job that ends failed.
	Failed(reason jobs.Reason)
	// Swept is called after every sweep.
	Swept(r SweepReport)
}

type nopObserver struct{}

func (nopObserver) Submitted()              {}
func (nopObserver) RateLimited(string)      {}
func (nopObserver) Generated(time.Duration) {}
func (nopObserver) Archived(int64)          {}
func (nopObserver) Failed(jobs.Reason)      {}
func (nopObserver) Swept(SweepReport)       {}
