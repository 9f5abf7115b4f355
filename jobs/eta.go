package jobs

import (
	"fmt"
	"time"

	"github.com/kontextq/kontextq/internal/human"
	"github.com/kontextq/kontextq/ratelimit"
)

// ETA is how long a batch has left, at best: the submissions that go out until its last queued
// job's, at the account's rate, then their generation. A batch can go slower (failures, batches
// loaded later), never faster.
type ETA struct {
	// Queued are the batch's jobs waiting for a turn at the rate; Held, the queued jobs the
	// budget holds (they wait for a raise of the budget, not for the rate, and are not in
	// Queued); InFlight, the jobs at Kie or being archived.
	Queued, Held, InFlight int64
	// Turns is how many submissions go out until the batch's last queued job has: Queued, or
	// more when other batches' jobs go before it (Share.Turns).
	Turns int64
	// Submit is how long Turns take at Rate. Known is false when Rate is no rate and jobs are
	// queued: then how long they take is not known.
	Rate   ratelimit.Rate
	Submit time.Duration
	Known  bool
}

// EstimateETA is the one place a batch's ETA is worked out, for status, run's progress and the
// gallery alike: from its counts, its share of the account's submissions (the zero Share when
// it has nothing in line or its share is not read) and the account's rate.
func EstimateETA(c Counts, sh Share, rate ratelimit.Rate) ETA {
	e := ETA{Queued: max(c.Queued-c.Held, 0), Held: c.Held, InFlight: c.Submitted + c.Generated, Rate: rate, Known: true}
	if e.Queued == 0 {
		return e
	}
	e.Turns = max(sh.Turns, e.Queued)
	e.Submit, e.Known = rate.Time(e.Turns)
	return e
}

// String says the ETA as status and the gallery show it.
func (e ETA) String() string {
	switch {
	case e.Queued == 0 && e.Held > 0:
		return fmt.Sprintf("%d jobs at Kie or being archived; the rest are held by the budget", e.InFlight)
	case e.Queued == 0:
		return fmt.Sprintf("%d jobs at Kie or being archived; no more to submit", e.InFlight)
	case !e.Known:
		return "unknown (no --rate)"
	case e.Turns > e.Queued:
		return fmt.Sprintf("at least %s: %d submissions at --rate %s (%d queued here, the rest other batches' turns), then their generation",
			human.Duration(e.Submit), e.Turns, e.Rate, e.Queued)
	}
	return fmt.Sprintf("at least %s: %d queued at --rate %s, then their generation", human.Duration(e.Submit), e.Queued, e.Rate)
}
