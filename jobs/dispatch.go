package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waiting jobs are kept out of asynq until shortly before a token is free for them. A queued job
// waits in its batch's list for its class ("<ns>:wait:<class>:<batch>", ids only), and each class
// has a ring of the batches with jobs waiting ("<ns>:ring:<class>"). Dispatch takes jobs from the
// highest class that has any, one per batch in turn, and hands them to the worker, which queues
// their asynq submit tasks; asynq then holds only the few jobs about to be submitted. So
//
//   - a job of a higher class waits for at most the short asynq backlog, never for a whole batch;
//   - batches of one class share the tokens round-robin: a 10-job batch loaded behind a
//     1,000,000-job one is done in about 20 tokens;
//   - a waiting job costs one list entry beside its ledger record, not an asynq task.
//
// A dispatched job is noted in "<ns>:dispatched" (by ref, scored by the time) until its submit
// task has run, so that a job whose task was never queued (the process died in between) is found
// and queued again by the sweeper. Every key is under the ledger's prefix, in the namespace's
// hash slot on a Cluster, so one script moves a job between them atomically.

// Fields of a job's record that belong to waiting.
const (
	fPriority = "pr" // the class it waits in, when not Bulk
	fWaiting  = "wt" // "1" while it is in a waiting list
)

func (l *Ledger) waitKey(p Priority, batch string) string {
	return l.kp + "wait:" + string(p) + ":" + batch
}
func (l *Ledger) ringKey(p Priority) string { return l.kp + "ring:" + string(p) }
func (l *Ledger) dispatchedKey() string     { return l.kp + "dispatched" }
func (l *Ledger) dispatchLockKey() string   { return l.kp + "dispatch-lock" }

// waitLua puts a job in line: at the end of its batch's list (or at the front when ARGV front
// is "1"), adding the batch to its class's ring when the list was empty. It is shared by the
// scripts that create and requeue jobs. job, wait and ring are keys; batch, id and pr the job's.
const waitLua = `
local function wait(job, waitk, ring, batch, id, pr, front)
  local n
  if front then n = redis.call('LPUSH', waitk, id) else n = redis.call('RPUSH', waitk, id) end
  if n == 1 then redis.call('RPUSH', ring, batch) end
  redis.call('HSET', job, 'wt', '1')
  if pr ~= 'bulk' then redis.call('HSET', job, 'pr', pr) else redis.call('HDEL', job, 'pr') end
end
`

// lineScript puts queued jobs that are not waiting back in line, in the class they were
// enqueued with. Jobs in any other state, or already waiting, are left alone.
//
// KEYS: none (the keys are built from the prefix, all in the namespace's slot).
// ARGV: key prefix, front ("1" or ""), then batch and id of each job.
// Returns how many jobs were put in line.
var lineScript = redis.NewScript(waitLua + `
local kp = ARGV[1]
local front = ARGV[2] == '1'
local n = 0
for i = 3, #ARGV, 2 do
  local batch, id = ARGV[i], ARGV[i+1]
  local job = kp .. 'job:' .. batch .. '/' .. id
  local f = redis.call('HMGET', job, 's', 'wt', 'pr', 'sub')
  if f[1] == 'queued' and not f[2] and not f[4] then
    local pr = f[3] or 'bulk'
    wait(job, kp .. 'wait:' .. pr .. ':' .. batch, kp .. 'ring:' .. pr, batch, id, pr, front)
    n = n + 1
  end
end
return n
`)

// dispatchScript takes queued jobs from the highest class with jobs waiting, one per batch in
// turn, and notes them as dispatched. Each class has a cap: the jobs taken from it and the
// classes above it stay within it, so a full backlog of a lower class never holds a higher one
// back. Entries whose job is no longer queued
// (cancelled, failed, already submitted) are dropped on the way; the number of entries looked at
// is bounded so one call never holds Redis for long.
//
// KEYS: the ring of each class in ARGV's order, then the dispatched set.
// ARGV: key prefix, the most taken in all (bounds the work), now ms, then class and cap of each
// class, highest first.
// Returns batch, id, paid submissions and class of each job taken, flattened.
var dispatchScript = redis.NewScript(`
local kp = ARGV[1]
local looks = tonumber(ARGV[2]) * 4 + 64
local out = {}
local taken = 0
for c = 4, #ARGV, 2 do
  local cls = ARGV[c]
  local cap = tonumber(ARGV[c + 1])
  local ring = KEYS[(c - 2) / 2]
  while taken < cap and looks > 0 do
    local batch = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    if not batch then break end
    looks = looks - 1
    local wk = kp .. 'wait:' .. cls .. ':' .. batch
    local id = redis.call('LPOP', wk)
    if redis.call('LLEN', wk) == 0 then redis.call('LREM', ring, 0, batch) end
    if id then
      local job = kp .. 'job:' .. batch .. '/' .. id
      local f = redis.call('HMGET', job, 's', 'sub', 'n')
      if f[1] then redis.call('HDEL', job, 'wt') end
      if f[1] == 'queued' and not f[2] then
        out[#out + 1] = batch
        out[#out + 1] = id
        out[#out + 1] = f[3] or '0'
        out[#out + 1] = cls
        redis.call('ZADD', KEYS[#KEYS], ARGV[3], batch .. '/' .. id)
        taken = taken + 1
      end
    end
  end
end
return out
`)

// dropScript removes a batch from every class's ring and deletes its waiting lists.
// KEYS: the ring then the waiting list of each class. ARGV: batch. Returns the jobs removed.
var dropScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS, 2 do
  redis.call('LREM', KEYS[i], 0, ARGV[1])
  n = n + redis.call('LLEN', KEYS[i + 1])
  redis.call('DEL', KEYS[i + 1])
end
return n
`)

// Dispatched is a job handed to a worker to queue its submit task.
type Dispatched struct {
	Ref
	Submissions int      // paid submissions so far, which name its submit task
	Priority    Priority // its class, which names its submit queue
}

// Dispatch takes up to n waiting jobs in the order they should be submitted (see above) and
// notes them as dispatched. The caller queues their submit tasks (Tasks.SubmitAs), then calls
// Undispatch when each has run.
func (l *Ledger) Dispatch(ctx context.Context, n int) ([]Dispatched, error) {
	return l.DispatchUpTo(ctx, n, nil)
}

// DispatchUpTo is Dispatch for a backlog of backlog tasks per class, of which have already
// holds have[p] in class p's queue: it takes jobs of class p while the jobs of p and the classes
// above it, queued and taken, are fewer than backlog.
func (l *Ledger) DispatchUpTo(ctx context.Context, backlog int, have map[Priority]int64) ([]Dispatched, error) {
	keys := make([]string, 0, len(Priorities)+1)
	args := []any{l.kp, backlog, ms(l.now())}
	above := int64(0)
	for _, p := range Priorities {
		above += have[p]
		keys = append(keys, l.ringKey(p))
		args = append(args, string(p), max(int64(backlog)-above, 0))
	}
	keys = append(keys, l.dispatchedKey())
	res, err := dispatchScript.Run(ctx, l.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dispatching jobs: %w", err)
	}
	out := make([]Dispatched, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		subs, _ := strconv.Atoi(res[i+2])
		out = append(out, Dispatched{Ref: Ref{Batch: res[i], ID: res[i+1]}, Submissions: subs, Priority: Priority(res[i+3])})
	}
	return out, nil
}

// PutInLine puts queued jobs that are not waiting back in line in the class they were enqueued
// with: at the end of their batch's list, or at its front for a job that already had its turn
// (a resubmission). It reports how many were put in line.
func (l *Ledger) PutInLine(ctx context.Context, front bool, refs ...Ref) (int, error) {
	if len(refs) == 0 {
		return 0, nil
	}
	f := ""
	if front {
		f = "1"
	}
	args := make([]any, 0, 2+2*len(refs))
	args = append(args, l.kp, f)
	for _, r := range refs {
		args = append(args, r.Batch, r.ID)
	}
	n, err := lineScript.Run(ctx, l.rdb, nil, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("putting %d jobs in line: %w", len(refs), err)
	}
	return n, nil
}

// Undispatch notes that a dispatched job's submit task has run.
func (l *Ledger) Undispatch(ctx context.Context, r Ref) error {
	return l.rdb.ZRem(ctx, l.dispatchedKey(), r.String()).Err()
}

// StaleDispatches lists up to limit jobs dispatched before t whose submit task has not reported
// back, oldest first.
func (l *Ledger) StaleDispatches(ctx context.Context, t time.Time, limit int64) ([]Ref, error) {
	ids, err := l.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: l.dispatchedKey(), Start: "-inf", Stop: ms(t),
		ByScore: true, Count: limit}).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger dispatched: %w", err)
	}
	return parseRefs(ids), nil
}

// TouchDispatch renews a dispatched job's note, after its submit task was found or queued again.
func (l *Ledger) TouchDispatch(ctx context.Context, r Ref) error {
	return l.rdb.ZAddXX(ctx, l.dispatchedKey(), redis.Z{Score: float64(l.now().UnixMilli()), Member: r.String()}).Err()
}

// DispatchedOf lists the jobs of a batch that are dispatched: those whose submit tasks may be in
// asynq.
func (l *Ledger) DispatchedOf(ctx context.Context, batch string) ([]Ref, error) {
	var out []Ref
	iter := l.rdb.ZScan(ctx, l.dispatchedKey(), 0, escapeGlob(batch)+"/*", 500).Iterator()
	for iter.Next(ctx) {
		m := iter.Val()
		if iter.Next(ctx) { // ZSCAN yields member, score
			if r, err := ParseRef(m); err == nil && r.Batch == batch {
				out = append(out, r)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("ledger dispatched %s: %w", batch, err)
	}
	return out, nil
}

// DropWaiting takes every waiting job of a batch out of line, in every class. It reports how
// many entries it removed. The jobs' records are not changed: cancel fails them first.
func (l *Ledger) DropWaiting(ctx context.Context, batch string) (int, error) {
	keys := make([]string, 0, 2*len(Priorities))
	for _, p := range Priorities {
		keys = append(keys, l.ringKey(p), l.waitKey(p, batch))
	}
	n, err := dropScript.Run(ctx, l.rdb, keys, batch).Int()
	if err != nil {
		return 0, fmt.Errorf("ledger: taking %s out of line: %w", batch, err)
	}
	return n, nil
}

// TryDispatchLock takes the namespace's dispatch lock for ttl unless another process holds it,
// so that one process at a time tops up the submit backlog. It returns the release function.
func (l *Ledger) TryDispatchLock(ctx context.Context, owner string, ttl time.Duration) (release func(), ok bool, err error) {
	ok, err = l.rdb.SetNX(ctx, l.dispatchLockKey(), owner, ttl).Result()
	if err != nil || !ok {
		return func() {}, false, err
	}
	return func() {
		_ = unlockScript.Run(context.WithoutCancel(ctx), l.rdb, []string{l.dispatchLockKey()}, owner).Err()
	}, true, nil
}

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// WaitingBatch is a batch's jobs waiting in one class.
type WaitingBatch struct {
	Priority Priority
	Batch    string
	Jobs     int64
}

// Waiting lists the batches with jobs waiting, class by class (highest first), each class's
// batches in the order they take their next turn.
func (l *Ledger) Waiting(ctx context.Context) ([]WaitingBatch, error) {
	rings := make([]*redis.StringSliceCmd, len(Priorities))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range Priorities {
			rings[i] = p.LRange(ctx, l.ringKey(pr), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger waiting: %w", err)
	}
	var out []WaitingBatch
	for i, pr := range Priorities {
		for _, b := range rings[i].Val() {
			out = append(out, WaitingBatch{Priority: pr, Batch: b})
		}
	}
	lens := make([]*redis.IntCmd, len(out))
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, w := range out {
			lens[i] = p.LLen(ctx, l.waitKey(w.Priority, w.Batch))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger waiting: %w", err)
	}
	for i := range out {
		out[i].Jobs = lens[i].Val()
	}
	return out, nil
}

// Share is a batch's place among the jobs waiting.
type Share struct {
	Priority Priority
	Waiting  int64
	// Fraction of the submissions the batch gets now: 1/k among the k batches of the highest
	// class with jobs waiting, 0 while a higher class has jobs waiting.
	Fraction float64
	// Turns is how many submissions it takes until the batch's last waiting job is submitted:
	// every job waiting in a higher class, and, from each batch of its own class (itself
	// included), as many as it has itself, the turns round-robin takes until its last.
	Turns int64
	// Batches is the number of batches waiting in its class; Higher, the jobs waiting in higher
	// classes.
	Batches int
	Higher  int64
}

// ShareOf works out batch's share from a Waiting list; ok is false when it has nothing waiting.
func ShareOf(waiting []WaitingBatch, batch string) (s Share, ok bool) {
	var mine *WaitingBatch
	for i := range waiting {
		if waiting[i].Batch == batch && waiting[i].Jobs > 0 {
			mine = &waiting[i]
			break
		}
	}
	if mine == nil {
		return Share{}, false
	}
	s = Share{Priority: mine.Priority, Waiting: mine.Jobs}
	rank := func(p Priority) int {
		for i, q := range Priorities {
			if p == q {
				return i
			}
		}
		return len(Priorities)
	}
	higher := false
	for _, w := range waiting {
		switch {
		case w.Jobs <= 0:
		case rank(w.Priority) < rank(mine.Priority):
			s.Turns += w.Jobs
			s.Higher += w.Jobs
			higher = true
		case w.Priority == mine.Priority:
			s.Batches++
			s.Turns += min(w.Jobs, mine.Jobs)
		}
	}
	if !higher && s.Batches > 0 {
		s.Fraction = 1 / float64(s.Batches)
	}
	return s, true
}

// parseRefs reads "batch/id" members, skipping any that are not.
func parseRefs(ms []string) []Ref {
	out := make([]Ref, 0, len(ms))
	for _, m := range ms {
		if r, err := ParseRef(m); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// escapeGlob escapes the characters Redis's MATCH patterns treat specially.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
