package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

// Budgets in the submit path (the ledger's side is in jobs/budget.go). Before anything is sent,
// the job's price is reserved against its batch's cap and the account's floor; a job the budget
// cannot cover is held, and its task ends without error: it waits, queued and visibly held, for
// a raise rather than cycling through the queue. Right before the generate call, the call is
// admitted (BeginCall), which is where a model's unknown price is measured; once Kie answers, the
// reservation is spent (the ledger settles it as the job's task id is recorded) or, when Kie
// refused the call, given back, and held jobs that now fit are released.

const (
	// measureWait is how soon a submission waiting for a price measurement tries again. A
	// measurement lasts one generate call and asynq schedules retries in whole seconds.
	measureWait = time.Second
	// drainPoll is how often a measuring submission looks whether the calls in flight ended.
	drainPoll = 50 * time.Millisecond
)

// errHeld ends a submit task whose job the budget holds (handleSubmit returns nil for it).
var errHeld = errors.New("held by the budget")

// modelOf is the model a job's request uses.
func modelOf(j *jobs.Job) string {
	if j.Spec.Model == "" {
		return jobs.DefaultModel
	}
	return j.Spec.Model
}

// reserve reserves the job's price (jobs.Ledger.Reserve). It returns errHeld when the budget
// holds the job, and a RateLimitedError while a price measurement keeps it waiting.
func (w *Worker) reserve(ctx context.Context, j *jobs.Job) (jobs.Reservation, error) {
	req := jobs.ReserveRequest{Model: modelOf(j)}
	if p, ok := w.prices[req.Model]; ok {
		req.Price, req.PriceKnown = p, true
	}
	for {
		res, err := w.ledger.Reserve(ctx, j.Ref, req)
		if err != nil {
			return res, err
		}
		switch res.Outcome {
		case jobs.NeedBalance:
			if err := w.readBalance(ctx); err != nil {
				return res, err
			}
			req.FreshBalance = true
			continue
		case jobs.Wait:
			return res, &RateLimitedError{RetryAfter: measureWait, Why: res.Reason}
		case jobs.Held:
			// Debug: at the end of a capped batch every job left is held, one line each.
			w.log.Debug("job held by the budget", "job", j.Ref.String(), "reason", res.Reason)
			return res, errHeld
		}
		return res, nil
	}
}

// readBalance reads the account's balance from Kie into the ledger's estimate.
func (w *Worker) readBalance(ctx context.Context) error {
	reading, err := w.ledger.StartBalanceReading(ctx)
	if err != nil {
		return err
	}
	v, err := w.o.Kie.Credits(ctx)
	if err != nil {
		return balanceUnread(fmt.Errorf("reading the account's balance for its floor: %w", err))
	}
	return w.ledger.RecordBalance(ctx, reading, jobs.CreditsOf(v))
}

// balanceUnread sends a submission back when the balance it needs cannot be read: waiting for
// Kie's credit endpoint is not the job's failure, and must not use its retries up.
func balanceUnread(err error) error {
	return &RateLimitedError{RetryAfter: maxLimiterWait, Why: err.Error(), Err: err}
}

// paidCall is a generate call admitted by the ledger; for a measuring one, the balance read
// before it.
type paidCall struct {
	*jobs.Call
	before float64
}

// beginCall admits the job's generate call. A measuring call waits, within maxLimiterWait, for
// the calls in flight to end (none starts meanwhile), then reads the balance.
func (w *Worker) beginCall(ctx context.Context, j *jobs.Job, measuring bool) (*paidCall, error) {
	deadline := time.Now().Add(maxLimiterWait)
	for {
		c, err := w.ledger.BeginCall(ctx, j.Ref, measuring, submitLease)
		switch {
		case errors.Is(err, jobs.ErrCallWait):
			return nil, &RateLimitedError{RetryAfter: measureWait, Why: err.Error()}
		case errors.Is(err, jobs.ErrCallDrain):
			if time.Now().After(deadline) {
				return nil, &RateLimitedError{RetryAfter: measureWait, Why: err.Error()}
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(drainPoll):
			}
			continue
		case err != nil:
			return nil, err
		}
		pc := &paidCall{Call: c}
		if measuring {
			if pc.before, err = w.o.Kie.Credits(ctx); err != nil {
				w.endCall(ctx, pc, false)
				return nil, balanceUnread(fmt.Errorf("reading the balance to measure the price of %s: %w", modelOf(j), err))
			}
		}
		return pc, nil
	}
}

// endCall records that the call ended. A measuring call that was not answered with a task
// (measured false) ends its measurement without a price: the next submission measures again.
func (w *Worker) endCall(ctx context.Context, pc *paidCall, measured bool) {
	ctx = context.WithoutCancel(ctx)
	if err := pc.End(ctx); err != nil {
		w.log.Warn("ending a generate call in the ledger failed; its lease ends it", "err", err)
	}
	if pc.Measuring && !measured {
		if err := pc.EndMeasure(ctx); err != nil {
			w.log.Warn("ending a price measurement failed; its lease ends it", "err", err)
		}
	}
}

// measured reads the balance after a measuring call that Kie accepted and records the price.
// A balance that did not drop (billed later, or topped up meanwhile) teaches nothing: the next
// submission of the model measures again.
func (w *Worker) measured(ctx context.Context, j *jobs.Job, pc *paidCall) {
	model := modelOf(j)
	after, err := w.o.Kie.Credits(ctx)
	price := jobs.CreditsOf(pc.before - after)
	switch {
	case err != nil:
		w.log.Warn("reading the balance after a price measurement failed; the next submission measures again", "model", model, "err", err)
	case price <= 0:
		w.log.Warn("the balance did not drop by a submission; its price is measured again with the next one (or set --price)",
			"model", model, "before", pc.before, "after", after)
	default:
		if err := pc.Measured(ctx, j.Ref, model, price); err != nil {
			w.log.Warn("recording a measured price failed", "model", model, "err", err)
			break
		}
		w.log.Info("price measured", "model", model, "credits", price.String())
		w.releaseHeld(ctx, j.Batch)
		return
	}
	if err := pc.EndMeasure(ctx); err != nil {
		w.log.Warn("ending a price measurement failed; its lease ends it", "err", err)
	}
}

// giveBack returns the reservation of a job whose call Kie refused, and releases held jobs that
// fit in it.
func (w *Worker) giveBack(ctx context.Context, r jobs.Ref) {
	ctx = context.WithoutCancel(ctx)
	if _, err := w.ledger.Release(ctx, r); err != nil {
		w.log.Warn("giving back a reservation failed", "job", r.String(), "err", err)
		return
	}
	w.releaseHeld(ctx, r.Batch)
}

// releaseHeld releases the held jobs of batch that its budget can now cover.
func (w *Worker) releaseHeld(ctx context.Context, batch string) {
	learned, err := w.ledger.LearnedPrices(ctx)
	if err != nil {
		w.log.Warn("releasing held jobs failed", "batch", batch, "err", err)
		return
	}
	n, err := jobs.ReleaseHeld(ctx, w.ledger, batch, jobs.SmallestPrice(w.prices, learned))
	if err != nil {
		w.log.Warn("releasing held jobs failed; the sweeper tries again", "batch", batch, "err", err)
	}
	if n > 0 {
		w.log.Info("held jobs released", "batch", batch, "jobs", n)
	}
}

// sweepBudget refreshes the balance estimate when a floor is set (another client of the
// account may have spent, or the account been topped up) and releases the held jobs that fit.
func (w *Worker) sweepBudget(ctx context.Context) error {
	batches, err := w.ledger.HeldBatches(ctx)
	if err != nil || len(batches) == 0 {
		return err
	}
	a, err := w.ledger.Account(ctx)
	if err != nil {
		return err
	}
	if a.HasFloor {
		if err := w.readBalance(ctx); err != nil {
			w.log.Warn("sweep: reading the balance failed", "err", err)
		}
	}
	for _, b := range batches {
		w.releaseHeld(ctx, b)
	}
	return nil
}

// budgetPrices are the configured prices in the ledger's unit.
func budgetPrices(p map[string]float64) map[string]jobs.Credits {
	out := make(map[string]jobs.Credits, len(p))
	for m, v := range p {
		out[m] = jobs.CreditsOf(v)
	}
	return out
}

// chargeRestored charges a job's batch with the submissions a previous process made, as its
// journal tells them (paid ones, and one cut off that may have been billed): a batch run again
// without REDIS_URL starts from an empty ledger, and its cap must still count them.
func (w *Worker) chargeRestored(ctx context.Context, r jobs.Ref, paid int, inFlight bool) error {
	if inFlight {
		paid++
	}
	if paid == 0 {
		return nil
	}
	j, err := w.ledger.Get(ctx, r)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p, ok := w.prices[modelOf(j)]; ok {
		return w.ledger.Charge(ctx, r, p*jobs.Credits(paid), 0)
	}
	return w.ledger.Charge(ctx, r, 0, paid)
}
