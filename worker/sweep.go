package worker

import (
	"context"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// sweepLoop runs Sweep every SweepInterval in whichever worker process holds the sweep lock.
func (w *Worker) sweepLoop(ctx context.Context) {
	t := time.NewTicker(w.o.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := w.o.Redis.SetNX(ctx, w.o.Namespace+":sweep-lock", "1", w.o.SweepInterval*9/10).Result()
		if err != nil || !ok {
			continue
		}
		if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sweep failed", "err", err)
		}
	}
}

// SweepReport says what one sweep did.
type SweepReport struct {
	Archives      int       // archive tasks (re)queued for generated jobs
	Checks        int       // silent submitted jobs checked
	SoonestExpiry time.Time // of any generated, unarchived result
}

// Sweep leaves nothing to chance: it re-enqueues the archive of every generated but unarchived job,
// soonest expiry first (a live task with the same id makes this a no-op), and checks every
// submitted job that has been silent past the poll limit.
func (w *Worker) Sweep(ctx context.Context) error {
	var rep SweepReport
	now := w.o.Now()
	refs, exps, err := w.ledger.Expiring(ctx, now.Add(100*365*24*time.Hour), 1000)
	if err != nil {
		return err
	}
	for i, r := range refs {
		if i == 0 {
			rep.SoonestExpiry = exps[0]
			if exps[0].Sub(now) < w.o.ExpiryMargin {
				w.log.Warn("an unarchived result is close to expiry", "job", r.String(), "expires", exps[0], "in", exps[0].Sub(now).Round(time.Second))
			}
		}
		j, err := w.ledger.Get(ctx, r)
		if err != nil || j.State != jobs.Generated {
			continue
		}
		if err := w.queueArchive(ctx, j); err != nil {
			return err
		}
		rep.Archives++
	}
	silent, _, err := w.ledger.InFlight(ctx, now.Add(-w.o.PollTimeout), 1000)
	if err != nil {
		return err
	}
	for _, r := range silent {
		if err := w.Check(ctx, r); err != nil {
			return err
		}
		rep.Checks++
	}
	if pe, err := w.pause.get(ctx); err == nil && pe != nil && pe.Reason == "out of credits" {
		if c, err := w.o.Kie.Credits(ctx); err == nil && c > 0 {
			_ = w.pause.clear(ctx, pe.Reason)
			w.log.Info("credits are back; submissions resume", "credits", c)
		}
	}
	w.o.Observer.Swept(rep)
	w.log.Debug("sweep", "archives", rep.Archives, "checks", rep.Checks)
	return nil
}
