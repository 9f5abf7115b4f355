package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bulk operations on the ledger. A batch may hold a million jobs, so these work in chunks, each
// chunk one pipeline of the same conditional scripts the single-job operations use: the
// guarantees of Apply (a change happens only from the expected state, counters and indexes
// stay in step) hold for every job, and a chunk costs one round trip instead of hundreds.

// Batch counter fields kept beside the per-state counts, for the batch's pace.
const (
	bFirstSubmitted = "fs" // the first generate call of the batch (ms)
	bLastEnded      = "le" // the latest job that ended (ms)
)

// opChunk is how many jobs one pipeline handles.
const opChunk = 500

// Created is what CreateMany did for one spec.
type Created struct {
	Existing    State // "" when the job was created now
	Submissions int   // paid submissions of an existing job
}

// CreateMany is Create for many specs in one round trip. Every spec must have an id and a batch.
// The result is in the order of specs.
func (l *Ledger) CreateMany(ctx context.Context, specs []*Spec, pr Priority) ([]Created, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	if !pr.valid() {
		return nil, fmt.Errorf("ledger create: priority %q: want one of interactive, normal, bulk", pr)
	}
	if err := l.loadScripts(ctx, createScript); err != nil {
		return nil, err
	}
	now := ms(l.now())
	cmds := make([]*redis.Cmd, len(specs))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range specs {
			if s.ID == "" || s.Batch == "" {
				return fmt.Errorf("job without id or batch")
			}
			spec, err := json.Marshal(specBody(s))
			if err != nil {
				return fmt.Errorf("%s/%s: %w", s.Batch, s.ID, err)
			}
			keys, args := l.createArgs(s, spec, now, pr)
			cmds[i] = createScript.EvalSha(ctx, p, keys, args...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger create: %w", err)
	}
	out := make([]Created, len(specs))
	for i, c := range cmds {
		res, err := c.Slice()
		if err != nil || len(res) != 2 {
			return nil, fmt.Errorf("ledger create %s/%s: %v", specs[i].Batch, specs[i].ID, err)
		}
		st, _ := res[0].(string)
		n, _ := res[1].(int64)
		out[i] = Created{Existing: State(st), Submissions: int(n)}
	}
	return out, nil
}

// Known reports which of refs the ledger holds, in the order of refs.
func (l *Ledger) Known(ctx context.Context, refs []Ref) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(refs))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.Exists(ctx, l.jobKey(r))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger lookup: %w", err)
	}
	out := make([]bool, len(refs))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}

// BatchInfo is a batch's counters and the times that give its pace.
type BatchInfo struct {
	Counts
	Created time.Time // the first job was loaded
	// FirstSubmitted is the first generate call of the batch; LastEnded the latest job that
	// ended (archived or failed). Zero until it happens.
	FirstSubmitted, LastEnded time.Time
}

// Info reads a batch's counters and times. A batch the ledger does not know has Total 0.
func (l *Ledger) Info(ctx context.Context, batch string) (BatchInfo, error) {
	m, err := l.rdb.HGetAll(ctx, l.batchKey(batch)).Result()
	if err != nil {
		return BatchInfo{}, fmt.Errorf("ledger batch %s: %w", batch, err)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return BatchInfo{
		Counts: Counts{Total: n("total"), Queued: n("queued"), Submitted: n("submitted"), Generated: n("generated"),
			Archived: n("archived"), Failed: n("failed"), Held: n(bHeldCap) + n(bHeldFloor)},
		Created:        fromMS(m["created"]),
		FirstSubmitted: fromMS(m[bFirstSubmitted]),
		LastEnded:      fromMS(m[bLastEnded]),
	}, nil
}

// CancelReport says what CancelQueued did.
type CancelReport struct {
	Cancelled int // queued jobs now failed with reason Cancelled
	// InFlight are jobs Kie already holds (submitted, generated, or a generate call under way).
	// Kie has no cancel call: they finish, are billed, and are archived.
	InFlight int
	Finished int // archived or failed before the cancel
	Gone     int // listed in the batch but no longer in the ledger (retention)
}

// CancelQueued fails every queued job of a batch with reason Cancelled and message msg, and calls
// cancelled (when not nil) for each, with its paid submissions so far (which name its submit
// task). A job whose generate call is under way is not cancelled: it may already be at Kie. It
// is idempotent: a second call cancels nothing more.
func (l *Ledger) CancelQueued(ctx context.Context, batch, msg string, cancelled func(r Ref, submissions int) error) (CancelReport, error) {
	var rep CancelReport
	if err := l.loadScripts(ctx, transitionScript); err != nil {
		return rep, err
	}
	c := change{
		From:   []State{Queued},
		To:     Failed,
		Expect: map[string]string{fSubmitting: ""},
		Set:    map[string]string{fReason: string(Cancelled), fError: msg},
		Del:    []string{fToken, fWaiting},
	}
	err := l.eachChunk(ctx, batch, func(refs []Ref) error {
		subs := make([]*redis.StringCmd, len(refs))
		res, err := l.applyMany(ctx, refs, c, func(p redis.Pipeliner, i int) {
			subs[i] = p.HGet(ctx, l.jobKey(refs[i]), fSubs)
		})
		if err != nil {
			return err
		}
		for i, a := range res {
			switch {
			case a.applied:
				rep.Cancelled++
				if cancelled != nil {
					n, _ := strconv.Atoi(subs[i].Val())
					if err := cancelled(refs[i], n); err != nil {
						return err
					}
				}
			case a.before == "":
				rep.Gone++
			case a.before.Terminal():
				rep.Finished++
			default:
				rep.InFlight++
			}
		}
		return nil
	})
	return rep, err
}

// RetryReport says what RetryFailed did, by failure reason.
type RetryReport struct {
	Requeued map[Reason]int
	Skipped  map[Reason]int // failed jobs left failed because include refused their reason
}

// RetryFailed sends the failed jobs of a batch whose reason include accepts back to queued, and
// calls requeued for each with its paid submissions so far: requeued must queue the job's submit
// task. The ledger changes first, so a worker never finds a task for a job still failed; if the
// process dies in between, the jobs stay queued without a task until something queues it again
// (loading the batch's file again does). A job keeps its submission count; everything about its
// previous attempt (Kie task, result, upload, archive, reason and error) is cleared.
func (l *Ledger) RetryFailed(ctx context.Context, batch string, include func(Reason) bool, requeued func(r Ref, submissions int) error) (RetryReport, error) {
	rep := RetryReport{Requeued: map[Reason]int{}, Skipped: map[Reason]int{}}
	if err := l.loadScripts(ctx, transitionScript); err != nil {
		return rep, err
	}
	// A snapshot (SMEMBERS) rather than a scan, which may return a member twice.
	members, err := l.rdb.SMembers(ctx, l.batchFailed(batch)).Result()
	if err != nil {
		return rep, fmt.Errorf("ledger failures %s: %w", batch, err)
	}
	for len(members) > 0 {
		chunk := members[:min(len(members), opChunk)]
		members = members[len(chunk):]
		if err := l.retryChunk(ctx, chunk, include, requeued, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (l *Ledger) retryChunk(ctx context.Context, members []string, include func(Reason) bool, requeued func(Ref, int) error, rep *RetryReport) error {
	refs := make([]Ref, 0, len(members))
	for _, m := range members {
		if r, err := ParseRef(m); err == nil {
			refs = append(refs, r)
		}
	}
	reads := make([]*redis.SliceCmd, len(refs))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			reads[i] = p.HMGet(ctx, l.jobKey(r), fState, fReason, fSubs)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger read: %w", err)
	}
	var pick []Ref
	var reasons []Reason
	for i, rd := range reads {
		v := rd.Val()
		if len(v) != 3 || v[0] != string(Failed) {
			continue // expired, or retried meanwhile
		}
		why, _ := v[1].(string)
		if !include(Reason(why)) {
			rep.Skipped[Reason(why)]++
			continue
		}
		pick = append(pick, refs[i])
		reasons = append(reasons, Reason(why))
	}
	subs := make([]*redis.StringCmd, len(pick))
	res, err := l.applyManyWith(ctx, pick, func(i int) change {
		return change{
			From:   []State{Failed},
			To:     Queued,
			Expect: map[string]string{fReason: string(reasons[i])},
			// Not waiting: a failed job's place in line is gone (cancel drops it), and requeued
			// puts it back.
			Del: []string{fReason, fError, fSubmitting, fTask, fToken, fSubmittedAt, fUpload, fUploadedAt, fURL, fOrigin,
				fCreateTime, fCompleteTime, fExpires, fLocation, fSHA, fBytes, fArchivedAt, fWaiting},
		}
	}, func(p redis.Pipeliner, i int) {
		subs[i] = p.HGet(ctx, l.jobKey(pick[i]), fSubs)
	})
	if err != nil {
		return err
	}
	for i, a := range res {
		if !a.applied {
			continue
		}
		rep.Requeued[reasons[i]]++
		n, _ := strconv.Atoi(subs[i].Val())
		if err := requeued(pick[i], n); err != nil {
			return err
		}
	}
	return nil
}

// eachChunk calls fn with the refs of a batch's jobs, in load order, opChunk at a time.
func (l *Ledger) eachChunk(ctx context.Context, batch string, fn func([]Ref) error) error {
	for start := int64(0); ; start += opChunk {
		ids, err := l.rdb.LRange(ctx, l.batchJobs(batch), start, start+opChunk-1).Result()
		if err != nil {
			return fmt.Errorf("ledger list %s: %w", batch, err)
		}
		refs := make([]Ref, len(ids))
		for i, id := range ids {
			refs[i] = Ref{Batch: batch, ID: id}
		}
		if len(refs) > 0 {
			if err := fn(refs); err != nil {
				return err
			}
		}
		if len(ids) < opChunk {
			return nil
		}
	}
}

type applied struct {
	applied bool
	before  State // "" when the job is not in the ledger
}

// applyMany applies c to every ref in one pipeline. after, when set, adds commands that run right
// after each job's change (in the same pipeline, so they see its result).
func (l *Ledger) applyMany(ctx context.Context, refs []Ref, c change, after func(p redis.Pipeliner, i int)) ([]applied, error) {
	return l.applyManyWith(ctx, refs, func(int) change { return c }, after)
}

func (l *Ledger) applyManyWith(ctx context.Context, refs []Ref, change func(i int) change, after func(p redis.Pipeliner, i int)) ([]applied, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(refs))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			keys, args := l.changeArgs(r, change(i))
			cmds[i] = transitionScript.EvalSha(ctx, p, keys, args...)
			if after != nil {
				after(p, i)
			}
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("ledger %s: %w", refs[0].Batch, err)
	}
	out := make([]applied, len(refs))
	for i, c := range cmds {
		res, err := c.Slice()
		if err != nil || len(res) != 2 {
			return nil, fmt.Errorf("ledger %s: %v", refs[i], err)
		}
		ok, _ := res[0].(int64)
		st, _ := res[1].(string)
		out[i] = applied{applied: ok == 1, before: State(st)}
	}
	return out, nil
}

// changeArgs are the keys and arguments of transitionScript for c, as Apply builds them.
func (l *Ledger) changeArgs(r Ref, c change) ([]string, []any) {
	from := make([]string, len(c.From))
	for i, s := range c.From {
		from[i] = string(s)
	}
	args := []any{strings.Join(from, ","), string(c.To), l.retention.Milliseconds(), r.String(), ms(l.now())}
	args = appendPairs(args, c.Expect)
	args = appendPairs(args, c.Set)
	args = append(args, len(c.Del))
	for _, k := range c.Del {
		args = append(args, k)
	}
	return []string{l.jobKey(r), l.batchKey(r.Batch), l.tasksKey(), l.expiryKey(), l.inflightKey(), l.batchFailed(r.Batch),
		l.budgetKey(), l.heldKey(r.Batch, holdCap), l.heldKey(r.Batch, holdFloor)}, args
}

// loadScripts makes sure the scripts are in Redis's script cache, so that pipelines can call them
// by hash.
func (l *Ledger) loadScripts(ctx context.Context, scripts ...*redis.Script) error {
	for _, s := range scripts {
		if err := s.Load(ctx, l.rdb).Err(); err != nil {
			return fmt.Errorf("ledger: loading script: %w", err)
		}
	}
	return nil
}

// FailureReasons counts a batch's failed jobs by reason.
func (l *Ledger) FailureReasons(ctx context.Context, batch string) (map[Reason]int, error) {
	// SMEMBERS rather than SSCAN: a scan may return a member twice, and this is a count.
	members, err := l.rdb.SMembers(ctx, l.batchFailed(batch)).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger failures %s: %w", batch, err)
	}
	out := map[Reason]int{}
	for len(members) > 0 {
		chunk := members[:min(len(members), opChunk)]
		members = members[len(chunk):]
		cmds := make([]*redis.StringCmd, 0, len(chunk))
		_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range chunk {
				if r, err := ParseRef(m); err == nil {
					cmds = append(cmds, p.HGet(ctx, l.jobKey(r), fReason))
				}
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("ledger failures %s: %w", batch, err)
		}
		for _, c := range cmds {
			if v, err := c.Result(); err == nil {
				out[Reason(v)]++
			}
		}
	}
	return out, nil
}
