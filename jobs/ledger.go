package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is where a job stands: queued → submitted → generated → archived, or failed.
type State string

const (
	Queued    State = "queued"    // waiting for a submission (or a resubmission)
	Submitted State = "submitted" // Kie holds a task for it; polling
	Generated State = "generated" // Kie has the image; archiving
	Archived  State = "archived"  // on disk (or in the bucket), complete and verified
	Failed    State = "failed"    // ended without an image; Reason says why
)

// States lists every state in flow order.
var States = []State{Queued, Submitted, Generated, Archived, Failed}

// Terminal reports whether s ends a job.
func (s State) Terminal() bool { return s == Archived || s == Failed }

// Reason says why a job failed.
type Reason string

const (
	Rejected         Reason = "rejected"          // Kie refused the input (content policy, validation)
	GenerationFailed Reason = "generation_failed" // generation failed every time it was tried
	Expired          Reason = "expired"           // the result expired before it could be archived
	Cancelled        Reason = "cancelled"         // the batch was cancelled
	Interrupted      Reason = "interrupted"       // a submission was cut off after it may have reached Kie
	Errored          Reason = "error"             // submitting kept failing (transient errors past every retry)
)

// ErrNotFound is returned for a job the ledger does not hold (never created, or expired after
// its retention).
var ErrNotFound = errors.New("job not found in the ledger")

// Job is a job's ledger record. The record is a small Redis hash; field names are short because a
// million of them live in Redis at once.
type Job struct {
	Ref
	State State
	Spec  Spec

	Priority Priority // the class it waits in for submission

	TaskID      string    // Kie's task id of the current submission
	Submissions int       // paid generate calls made for this job
	Submitting  time.Time // set while a generate call is in flight; see Ledger.MarkSubmitting
	SubmittedAt time.Time
	PollToken   string // the poll chain that owns follow-up polls

	UploadURL  string // Kie's download URL of the uploaded local input image
	UploadedAt time.Time

	ResultURL    string
	OriginURL    string
	CreateTime   time.Time // Kie's
	CompleteTime time.Time // Kie's
	ExpiresAt    time.Time // when the result URL is assumed gone

	Location   string // where the image was archived
	SHA256     string
	Bytes      int64
	ArchivedAt time.Time

	Reason Reason
	Error  string // the last error, kept for humans
	// Held says why the budget holds the queued job ("" when it does not): see Ledger.Reserve.
	Held string
	// Credits is what the job's submissions were charged against its batch's budget (0 when
	// the job was submitted before budgets were kept, or its price was never known).
	Credits Credits
	Created time.Time
	Updated time.Time
}

// Ledger fields.
const (
	fState        = "s"
	fSpec         = "spec"
	fTask         = "t"
	fSubs         = "n"
	fSubmitting   = "sub"
	fSubmittedAt  = "sa"
	fToken        = "pt"
	fUpload       = "up"
	fUploadedAt   = "upa"
	fURL          = "url"
	fOrigin       = "ourl"
	fCreateTime   = "ct"
	fCompleteTime = "cpt"
	fExpires      = "exp"
	fLocation     = "loc"
	fSHA          = "sha"
	fBytes        = "b"
	fArchivedAt   = "aa"
	fReason       = "r"
	fError        = "err"
	fCreated      = "c"
	fUpdated      = "u"
	fSource       = "src" // "<index in the batch's file list>:<line>", only for jobs loaded from a file
	fName         = "nm"  // the archived image's base name, only when it is not the id
)

// LedgerOptions configure a Ledger.
type LedgerOptions struct {
	// Namespace prefixes every key ("kontextq" by default).
	Namespace string
	// Retention is how long a finished job's record stays (default 7 days). The sidecar in the
	// archive is the lasting record.
	Retention time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Ledger is the job records and per-batch counters in Redis. Every change goes through one Lua
// script that checks the expected state (and Kie task id) and keeps counters and indexes in step,
// so racing handlers — a callback and a poll, a redelivered task and its first run — change a job
// at most once.
type Ledger struct {
	rdb       redis.UniversalClient
	ns        string
	kp        string // key prefix, see keyPrefix
	retention time.Duration
	now       func() time.Time
}

// NewLedger returns the ledger of a namespace.
func NewLedger(rdb redis.UniversalClient, o LedgerOptions) *Ledger {
	if o.Namespace == "" {
		o.Namespace = "kontextq"
	}
	if o.Retention <= 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Ledger{rdb: rdb, ns: o.Namespace, kp: keyPrefix(rdb, o.Namespace), retention: o.Retention, now: o.Now}
}

// Namespace is the ledger's key prefix.
func (l *Ledger) Namespace() string { return l.ns }

func (l *Ledger) jobKey(r Ref) string         { return l.kp + "job:" + r.String() }
func (l *Ledger) batchKey(b string) string    { return l.kp + "batch:" + b }
func (l *Ledger) batchJobs(b string) string   { return l.kp + "batch:" + b + ":jobs" }
func (l *Ledger) batchFailed(b string) string { return l.kp + "batch:" + b + ":failed" }
func (l *Ledger) batchFiles(b string) string  { return l.kp + "batch:" + b + ":files" }
func (l *Ledger) batchNames(b string) string  { return l.kp + "batch:" + b + ":names" }
func (l *Ledger) batchesKey() string          { return l.kp + "batches" }
func (l *Ledger) tasksKey() string            { return l.kp + "tasks" }
func (l *Ledger) expiryKey() string           { return l.kp + "expiry" }
func (l *Ledger) inflightKey() string         { return l.kp + "inflight" }

// keyPrefix is the prefix of a namespace's ledger keys. One script changes a job's record, its
// batch's counters and the namespace's indexes together, and Redis Cluster runs a script only on
// keys of one hash slot: there every ledger key of the namespace carries the namespace as its hash
// tag ("{ns}:job:..."), so a namespace's ledger lives on one shard. A single node or a Sentinel
// deployment has no slots, and its keys keep the names they always had ("ns:job:..."), so a
// deployment that upgrades finds its ledger where it left it.
func keyPrefix(rdb redis.UniversalClient, ns string) string {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return "{" + ns + "}:"
	}
	return ns + ":"
}

// createScript records a queued job unless it exists. A job in the batch's failed set whose
// record is gone failed and then expired after the retention: the batch still counts and lists
// it, so it becomes queued again in place (as a retry would make it) rather than a second job.
//
// A job loaded from a file records it as an index into the batch's file list (a batch is loaded
// from a few files, and a path repeated in a million records would cost megabytes). A job with
// a name takes it in the batch's name index, which keeps names unique: a name another job holds
// gets "-<id>" appended; if even that is held, the create fails.
//
// The job is put in line for dispatch (see dispatch.go), and so is an existing queued job that is
// neither waiting nor being submitted: loading a file again revives a job whose dispatch was lost.
//
// KEYS: job, batch counters, batch job list, batches set, batch failed set, batch file list,
// batch name index, waiting list, class ring.
// ARGV: spec, now ms, id, batch, ref, file ("" none), line, name ("" the id), priority.
var createScript = redis.NewScript(waitLua + `
local s = redis.call('HGET', KEYS[1], 's')
if s then
  if s == 'queued' and redis.call('HEXISTS', KEYS[1], 'wt') == 0 and redis.call('HEXISTS', KEYS[1], 'sub') == 0 then
    wait(KEYS[1], KEYS[8], KEYS[9], ARGV[4], ARGV[3], ARGV[9], false)
  end
  return {s, tonumber(redis.call('HGET', KEYS[1], 'n') or '0')}
end
local name = ARGV[8]
if name ~= '' then
  local held = redis.call('HGET', KEYS[7], name)
  if held and held ~= ARGV[3] then
    name = name .. '-' .. ARGV[3]
    held = redis.call('HGET', KEYS[7], name)
    if held and held ~= ARGV[3] then return redis.error_reply('name ' .. name .. ' is taken by job ' .. held) end
  end
  redis.call('HSET', KEYS[7], name, ARGV[3])
end
redis.call('HSET', KEYS[1], 's', 'queued', 'spec', ARGV[1], 'c', ARGV[2], 'u', ARGV[2])
if name ~= '' then redis.call('HSET', KEYS[1], 'nm', name) end
if ARGV[6] ~= '' then
  local files = redis.call('LRANGE', KEYS[6], 0, -1)
  local idx = -1
  for i, f in ipairs(files) do
    if f == ARGV[6] then idx = i - 1 end
  end
  if idx < 0 then idx = redis.call('RPUSH', KEYS[6], ARGV[6]) - 1 end
  redis.call('HSET', KEYS[1], 'src', idx .. ':' .. ARGV[7])
end
redis.call('HINCRBY', KEYS[2], 'queued', 1)
wait(KEYS[1], KEYS[8], KEYS[9], ARGV[4], ARGV[3], ARGV[9], false)
if redis.call('SREM', KEYS[5], ARGV[5]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'failed', -1)
  return {'', 0}
end
redis.call('HINCRBY', KEYS[2], 'total', 1)
redis.call('HSETNX', KEYS[2], 'created', ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
return {'', 0}
`)

// createArgs are the keys and arguments of createScript for a job.
func (l *Ledger) createArgs(s *Spec, spec []byte, now string, p Priority) ([]string, []any) {
	r := Ref{Batch: s.Batch, ID: s.ID}
	name := s.Name
	if name == s.ID {
		name = ""
	}
	return []string{l.jobKey(r), l.batchKey(r.Batch), l.batchJobs(r.Batch), l.batchesKey(), l.batchFailed(r.Batch),
			l.batchFiles(r.Batch), l.batchNames(r.Batch), l.waitKey(p, r.Batch), l.ringKey(p)},
		[]any{spec, now, r.ID, r.Batch, r.String(), s.File, s.Line, name, string(p)}
}

// Create records a new queued job unless the ledger already holds one with the same batch and id,
// and puts it in line for submission in class p (see dispatch.go). It reports the state of the
// existing job ("" when created) and its paid submissions so far.
func (l *Ledger) Create(ctx context.Context, s *Spec, p Priority) (existing State, submissions int, err error) {
	if s.ID == "" || s.Batch == "" {
		return "", 0, fmt.Errorf("ledger create: job without id or batch")
	}
	if !p.valid() {
		return "", 0, fmt.Errorf("ledger create: priority %q: want one of interactive, normal, bulk", p)
	}
	spec, err := json.Marshal(specBody(s))
	if err != nil {
		return "", 0, fmt.Errorf("ledger create %s/%s: %w", s.Batch, s.ID, err)
	}
	r := Ref{Batch: s.Batch, ID: s.ID}
	keys, args := l.createArgs(s, spec, ms(l.now()), p)
	res, err := createScript.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		return "", 0, fmt.Errorf("ledger create %s: %w", r, err)
	}
	st, _ := res[0].(string)
	n, _ := res[1].(int64)
	return State(st), int(n), nil
}

// specBody is the spec as stored: id and batch are in the key already.
func specBody(s *Spec) *Spec {
	c := *s
	c.ID, c.Batch, c.File, c.Line, c.Name = "", "", "", 0, ""
	return &c
}

// Get reads a job's record.
func (l *Ledger) Get(ctx context.Context, r Ref) (*Job, error) {
	m, err := l.rdb.HGetAll(ctx, l.jobKey(r)).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger get %s: %w", r, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("ledger get %s: %w", r, ErrNotFound)
	}
	var files []string
	if m[fSource] != "" {
		if files, err = l.rdb.LRange(ctx, l.batchFiles(r.Batch), 0, -1).Result(); err != nil {
			return nil, fmt.Errorf("ledger get %s: %w", r, err)
		}
	}
	return decodeJob(r, m, files)
}

// decodeJob reads a job's record; files is its batch's file list.
func decodeJob(r Ref, m map[string]string, files []string) (*Job, error) {
	j := &Job{Ref: r, State: State(m[fState])}
	if err := json.Unmarshal([]byte(m[fSpec]), &j.Spec); err != nil {
		return nil, fmt.Errorf("ledger %s: corrupt spec: %w", r, err)
	}
	j.Spec.ID, j.Spec.Batch, j.Spec.Name = r.ID, r.Batch, m[fName]
	if fi, line, ok := strings.Cut(m[fSource], ":"); ok {
		if i, err := strconv.Atoi(fi); err == nil && i >= 0 && i < len(files) {
			j.Spec.File = files[i]
		}
		j.Spec.Line, _ = strconv.Atoi(line)
	}
	j.Priority = Priority(m[fPriority])
	if j.Priority == "" {
		j.Priority = Bulk
	}
	j.TaskID = m[fTask]
	j.Submissions, _ = strconv.Atoi(m[fSubs])
	j.Submitting = fromMS(m[fSubmitting])
	j.SubmittedAt = fromMS(m[fSubmittedAt])
	j.PollToken = m[fToken]
	j.UploadURL = m[fUpload]
	j.UploadedAt = fromMS(m[fUploadedAt])
	j.ResultURL = m[fURL]
	j.OriginURL = m[fOrigin]
	j.CreateTime = fromMS(m[fCreateTime])
	j.CompleteTime = fromMS(m[fCompleteTime])
	j.ExpiresAt = fromMS(m[fExpires])
	j.Location = m[fLocation]
	j.SHA256 = m[fSHA]
	j.Bytes, _ = strconv.ParseInt(m[fBytes], 10, 64)
	j.ArchivedAt = fromMS(m[fArchivedAt])
	j.Reason = Reason(m[fReason])
	j.Error = m[fError]
	j.Held = m[fHeld]
	cr, _ := strconv.ParseInt(m[fCredits], 10, 64)
	j.Credits = Credits(cr)
	j.Created = fromMS(m[fCreated])
	j.Updated = fromMS(m[fUpdated])
	return j, nil
}

// transitionScript applies one change to a job if it is in an expected state and its fields hold
// expected values, keeping counters and indexes in step.
//
// A job leaving queued settles its budget reservation (see budget.go): spent when it was submitted
// or a call that may have reached Kie was cut off (failed as interrupted), given back otherwise;
// and it is no longer held.
//
// KEYS: job, batch counters, tasks index, expiry index, in-flight index, batch failed set, budget,
// batch held-by-cap set, batch held-by-floor set.
// ARGV: from (comma list, "" any), to ("" keep), retention ms, ref, now ms, then n and n
// field/value pairs that must hold ("" means absent), then n and n pairs to set, then n and n
// fields to delete. Returns {1, state before} when applied, {0, state} when not ("" if the job does
// not exist).
var transitionScript = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 's')
if not s then return {0, ''} end
if ARGV[1] ~= '' then
  local ok = false
  for st in string.gmatch(ARGV[1], '[^,]+') do
    if st == s then ok = true end
  end
  if not ok then return {0, s} end
end
local i = 6
local n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  local v = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if v ~= ARGV[i+1] then return {0, s} end
  i = i + 2
end
local oldt = redis.call('HGET', KEYS[1], 't')
n = tonumber(ARGV[i]); i = i + 1
if n > 0 then
  local kv = {}
  for j = 1, 2*n do kv[j] = ARGV[i + j - 1] end
  redis.call('HSET', KEYS[1], unpack(kv))
  i = i + 2*n
end
n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
redis.call('HSET', KEYS[1], 'u', ARGV[5])
local to = ARGV[2]
local ref = ARGV[4]
if to == '' or to == s then return {1, s} end
redis.call('HSET', KEYS[1], 's', to)
redis.call('HINCRBY', KEYS[2], s, -1)
redis.call('HINCRBY', KEYS[2], to, 1)
if s == 'queued' then
  local rc = tonumber(redis.call('HGET', KEYS[1], 'rc') or '')
  if rc then
    local rm = redis.call('HGET', KEYS[1], 'rm')
    redis.call('HDEL', KEYS[1], 'rc', 'rm')
    redis.call('HINCRBY', KEYS[2], 'rsv', 0 - rc)
    redis.call('HINCRBY', KEYS[7], 'rsv', 0 - rc)
    if to == 'submitted' or (to == 'failed' and redis.call('HGET', KEYS[1], 'r') == 'interrupted') then
      redis.call('HINCRBY', KEYS[2], 'spent', rc)
      redis.call('HINCRBY', KEYS[1], 'cr', rc)
      if rm then redis.call('HINCRBY', KEYS[2], 'nu', 1) end
    else
      redis.call('HINCRBY', KEYS[7], 'tot', 0 - rc)
    end
  end
  if redis.call('HDEL', KEYS[1], 'hr') == 1 then
    if redis.call('SREM', KEYS[8], ref) == 1 then redis.call('HINCRBY', KEYS[2], 'hc', -1) end
    if redis.call('SREM', KEYS[9], ref) == 1 then redis.call('HINCRBY', KEYS[2], 'hf', -1) end
  end
end
if s == 'submitted' then
  if oldt then redis.call('HDEL', KEYS[3], oldt) end
  redis.call('ZREM', KEYS[5], ref)
elseif s == 'generated' then
  redis.call('ZREM', KEYS[4], ref)
elseif s == 'failed' then
  redis.call('SREM', KEYS[6], ref)
  redis.call('PERSIST', KEYS[1])
elseif s == 'archived' then
  redis.call('PERSIST', KEYS[1])
end
if to == 'submitted' then
  redis.call('HINCRBY', KEYS[1], 'n', 1)
  redis.call('HSETNX', KEYS[2], 'fs', ARGV[5])
  redis.call('HSET', KEYS[3], redis.call('HGET', KEYS[1], 't'), ref)
  redis.call('ZADD', KEYS[5], tonumber(redis.call('HGET', KEYS[1], 'sa') or ARGV[5]), ref)
elseif to == 'generated' then
  redis.call('ZADD', KEYS[4], tonumber(redis.call('HGET', KEYS[1], 'exp') or ARGV[5]), ref)
elseif to == 'failed' then
  redis.call('SADD', KEYS[6], ref)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], 'le', ARGV[5])
elseif to == 'archived' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], 'le', ARGV[5])
end
return {1, s}
`)

// change is one conditional change of a job record. It is the ledger's own: callers use the
// named verbs below, so the record's field names never leave this package.
type change struct {
	From   []State           // states the job may be in; empty means any
	To     State             // new state; "" keeps the state
	Expect map[string]string // record fields that must hold these values ("" means absent)
	Set    map[string]string
	Del    []string
}

// apply applies c to the job if its preconditions hold. It reports whether it applied and the
// state the job was in. A job the ledger does not hold gives ErrNotFound.
func (l *Ledger) apply(ctx context.Context, r Ref, c change) (applied bool, before State, err error) {
	keys, args := l.changeArgs(r, c)
	res, err := transitionScript.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		return false, "", fmt.Errorf("ledger %s: %w", r, err)
	}
	ok, _ := res[0].(int64)
	st, _ := res[1].(string)
	if st == "" {
		return false, "", fmt.Errorf("ledger %s: %w", r, ErrNotFound)
	}
	return ok == 1, State(st), nil
}

func appendPairs(args []any, m map[string]string) []any {
	args = append(args, len(m))
	for k, v := range m {
		args = append(args, k, v)
	}
	return args
}

// MarkSubmitting records that a generate call for a queued job is about to be sent. If the process
// dies before the answer is recorded, the marker tells the next attempt that Kie may have created
// (and billed) a task, so it must not submit again. It does not apply when the job is not queued
// or another submission is already marked.
//
// The marker is stamped with Redis's clock, not this process's: another worker judges its age,
// and worker clocks may disagree.
func (l *Ledger) MarkSubmitting(ctx context.Context, r Ref, uploadURL string, uploadedAt time.Time) (bool, error) {
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return false, fmt.Errorf("ledger %s: reading Redis time: %w", r, err)
	}
	set := map[string]string{fSubmitting: ms(now)}
	if uploadURL != "" {
		set[fUpload], set[fUploadedAt] = uploadURL, ms(uploadedAt)
	}
	ok, _, err := l.apply(ctx, r, change{From: []State{Queued}, Expect: map[string]string{fSubmitting: ""}, Set: set})
	return ok, err
}

// ClearSubmitting removes the in-flight marker after a generate call that certainly created no
// task (Kie answered with an error), keeping the error for humans.
func (l *Ledger) ClearSubmitting(ctx context.Context, r Ref, lastErr string) error {
	_, _, err := l.apply(ctx, r, change{From: []State{Queued}, Set: map[string]string{fError: lastErr}, Del: []string{fSubmitting}})
	return err
}

// RecordSubmitted stores Kie's task id for a job: the first thing done after generate answers.
func (l *Ledger) RecordSubmitted(ctx context.Context, r Ref, taskID string) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From: []State{Queued},
		To:   Submitted,
		Set:  map[string]string{fTask: taskID, fSubmittedAt: ms(l.now())},
		Del:  []string{fSubmitting, fToken, fError},
	})
	return ok, err
}

// ClaimPolls makes token the owner of the job's poll chain if the chain is still owned by old
// ("" for a job no chain owns yet). Only the owner schedules follow-up polls.
func (l *Ledger) ClaimPolls(ctx context.Context, r Ref, taskID, old, token string) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From:   []State{Submitted},
		Expect: map[string]string{fTask: taskID, fToken: old},
		Set:    map[string]string{fToken: token},
	})
	return ok, err
}

// Result is what Kie reported for a successful task.
type Result struct {
	ResultURL, OriginURL     string
	CreateTime, CompleteTime time.Time
	ExpiresAt                time.Time
}

// RecordGenerated records a successful task: the job moves to generated and into the expiry index.
func (l *Ledger) RecordGenerated(ctx context.Context, r Ref, taskID string, res Result) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From:   []State{Submitted},
		To:     Generated,
		Expect: map[string]string{fTask: taskID},
		Set: map[string]string{fURL: res.ResultURL, fOrigin: res.OriginURL, fCreateTime: ms(res.CreateTime),
			fCompleteTime: ms(res.CompleteTime), fExpires: ms(res.ExpiresAt)},
		Del: []string{fToken},
	})
	return ok, err
}

// ArchiveRecord is where and what was archived.
type ArchiveRecord struct {
	Location string
	SHA256   string
	Bytes    int64
	At       time.Time
}

// RecordArchived marks a generated job archived. Call it only once the image and its sidecar are
// in the store, complete and verified.
func (l *Ledger) RecordArchived(ctx context.Context, r Ref, a ArchiveRecord) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From: []State{Generated},
		To:   Archived,
		Set:  map[string]string{fLocation: a.Location, fSHA: a.SHA256, fBytes: strconv.FormatInt(a.Bytes, 10), fArchivedAt: ms(a.At)},
		Del:  []string{fError},
	})
	return ok, err
}

// RecordFoundArchived marks a queued job archived whose image the archive already holds (the
// ledger forgot the job after its retention and its file was loaded again), with the Kie task
// that made it: nothing is submitted, nothing paid twice.
func (l *Ledger) RecordFoundArchived(ctx context.Context, r Ref, taskID string, a ArchiveRecord) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From: []State{Queued},
		To:   Archived,
		Set: map[string]string{fTask: taskID, fLocation: a.Location, fSHA: a.SHA256, fBytes: strconv.FormatInt(a.Bytes, 10),
			fArchivedAt: ms(a.At)},
	})
	return ok, err
}

// RecordRearchived replaces where and what an archived job's image is, after it was archived
// again (a repair). A job no longer archived is left alone; one the ledger no longer holds gives
// ErrNotFound.
func (l *Ledger) RecordRearchived(ctx context.Context, r Ref, a ArchiveRecord) error {
	_, _, err := l.apply(ctx, r, change{
		From: []State{Archived},
		Set:  map[string]string{fLocation: a.Location, fSHA: a.SHA256, fBytes: strconv.FormatInt(a.Bytes, 10), fArchivedAt: ms(a.At)},
	})
	return err
}

// RestoreSubmitted moves a queued job with no generate call in flight to submitted with Kie's
// task id taskID, recorded at `at`, as a durable record outside Redis knows it: the job has had
// submissions paid submissions, the last one being taskID. It reports whether it applied and
// the state the job was in.
func (l *Ledger) RestoreSubmitted(ctx context.Context, r Ref, taskID string, submissions int, at time.Time) (bool, State, error) {
	// The transition to submitted counts one submission: start from the others.
	return l.apply(ctx, r, change{
		From:   []State{Queued},
		To:     Submitted,
		Expect: map[string]string{fSubmitting: ""},
		Set:    map[string]string{fTask: taskID, fSubmittedAt: ms(at), fSubs: strconv.Itoa(max(submissions, 1) - 1)},
		Del:    []string{fToken, fError},
	})
}

// Requeue sends a job whose task failed back to queued for a new (paid) submission, if it still
// holds taskID.
func (l *Ledger) Requeue(ctx context.Context, r Ref, taskID, why string) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From:   []State{Submitted},
		To:     Queued,
		Expect: map[string]string{fTask: taskID},
		Set:    map[string]string{fError: why},
		Del:    []string{fTask, fToken, fSubmittedAt},
	})
	return ok, err
}

// Fail ends a job in one of the from states with a reason. When taskID is set the job must still
// hold it.
func (l *Ledger) Fail(ctx context.Context, r Ref, from []State, taskID string, reason Reason, msg string) (bool, error) {
	c := change{From: from, To: Failed, Set: map[string]string{fReason: string(reason), fError: msg}, Del: []string{fSubmitting, fToken}}
	if taskID != "" {
		c.Expect = map[string]string{fTask: taskID}
	}
	ok, _, err := l.apply(ctx, r, c)
	return ok, err
}

// FailUnsent ends a queued job with a reason unless a generate call for it is marked in flight
// (see MarkSubmitting): that one is for the interrupted-submission path to judge.
func (l *Ledger) FailUnsent(ctx context.Context, r Ref, reason Reason, msg string) (bool, error) {
	ok, _, err := l.apply(ctx, r, change{
		From:   []State{Queued},
		To:     Failed,
		Expect: map[string]string{fSubmitting: ""},
		Set:    map[string]string{fReason: string(reason), fError: msg},
	})
	return ok, err
}

// SetError keeps the last error of a job for humans without changing its state.
func (l *Ledger) SetError(ctx context.Context, r Ref, msg string) error {
	_, _, err := l.apply(ctx, r, change{Set: map[string]string{fError: msg}})
	return err
}

// Counts are a batch's jobs per state.
type Counts struct {
	Total                                          int64
	Queued, Submitted, Generated, Archived, Failed int64
	// Held are the queued jobs the budget holds (see Ledger.Reserve).
	Held int64
}

// Done reports whether every job of the batch has ended.
func (c Counts) Done() bool { return c.Total > 0 && c.Archived+c.Failed >= c.Total }

// Stalled reports whether the batch has not ended but nothing of it is under way: every job
// still queued is held by the budget, and none is at Kie or being archived. Only raising the
// budget (or the balance) moves it on.
func (c Counts) Stalled() bool {
	return !c.Done() && c.Held > 0 && c.Held >= c.Queued && c.Submitted == 0 && c.Generated == 0
}

// Counts reads a batch's counters.
func (l *Ledger) Counts(ctx context.Context, batch string) (Counts, error) {
	m, err := l.rdb.HGetAll(ctx, l.batchKey(batch)).Result()
	if err != nil {
		return Counts{}, fmt.Errorf("ledger counts %s: %w", batch, err)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return Counts{Total: n("total"), Queued: n("queued"), Submitted: n("submitted"), Generated: n("generated"),
		Archived: n("archived"), Failed: n("failed"), Held: n(bHeldCap) + n(bHeldFloor)}, nil
}

// Batches lists the batches the ledger knows.
func (l *Ledger) Batches(ctx context.Context) ([]string, error) {
	return l.rdb.SMembers(ctx, l.batchesKey()).Result()
}

// Failures returns the failed jobs of a batch.
func (l *Ledger) Failures(ctx context.Context, batch string) ([]*Job, error) {
	refs, err := l.rdb.SMembers(ctx, l.batchFailed(batch)).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger failures %s: %w", batch, err)
	}
	return l.getMany(ctx, refs)
}

// getMany reads the jobs refs name, all of one batch, skipping those the ledger no longer holds.
func (l *Ledger) getMany(ctx context.Context, refs []string) ([]*Job, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(refs))
	var files *redis.StringSliceCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range refs {
			r, _ := ParseRef(s)
			cmds[i] = p.HGetAll(ctx, l.jobKey(r))
			if i == 0 {
				files = p.LRange(ctx, l.batchFiles(r.Batch), 0, -1)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger read: %w", err)
	}
	out := make([]*Job, 0, len(refs))
	for i, c := range cmds {
		if len(c.Val()) == 0 {
			continue // expired after retention
		}
		r, _ := ParseRef(refs[i])
		j, err := decodeJob(r, c.Val(), files.Val())
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// Each calls fn for every job of a batch still in the ledger, in load order, reading in chunks.
func (l *Ledger) Each(ctx context.Context, batch string, fn func(*Job) error) error {
	const chunk = 500
	for start := int64(0); ; start += chunk {
		ids, err := l.rdb.LRange(ctx, l.batchJobs(batch), start, start+chunk-1).Result()
		if err != nil {
			return fmt.Errorf("ledger list %s: %w", batch, err)
		}
		refs := make([]string, len(ids))
		for i, id := range ids {
			refs[i] = Ref{Batch: batch, ID: id}.String()
		}
		js, err := l.getMany(ctx, refs)
		if err != nil {
			return err
		}
		for _, j := range js {
			if err := fn(j); err != nil {
				return err
			}
		}
		if len(ids) < chunk {
			return nil
		}
	}
}

// JobForTask finds the job that holds a Kie task id (while it is submitted).
func (l *Ledger) JobForTask(ctx context.Context, taskID string) (Ref, error) {
	s, err := l.rdb.HGet(ctx, l.tasksKey(), taskID).Result()
	if errors.Is(err, redis.Nil) {
		return Ref{}, fmt.Errorf("task %q: %w", taskID, ErrNotFound)
	}
	if err != nil {
		return Ref{}, fmt.Errorf("ledger task index: %w", err)
	}
	return ParseRef(s)
}

// Due lists up to limit jobs of an index scored at or before t, soonest first: Expiring for
// generated jobs by result expiry, InFlight for submitted jobs by submission time.
func (l *Ledger) due(ctx context.Context, key string, t time.Time, limit int64) ([]Ref, []time.Time, error) {
	zs, err := l.rdb.ZRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: ms(t), Count: limit}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("ledger index %s: %w", key, err)
	}
	refs := make([]Ref, 0, len(zs))
	ts := make([]time.Time, 0, len(zs))
	for _, z := range zs {
		r, err := ParseRef(z.Member.(string))
		if err != nil {
			continue
		}
		refs = append(refs, r)
		ts = append(ts, time.UnixMilli(int64(z.Score)))
	}
	return refs, ts, nil
}

// Expiring lists generated, unarchived jobs whose results expire at or before t, soonest first.
func (l *Ledger) Expiring(ctx context.Context, t time.Time, limit int64) ([]Ref, []time.Time, error) {
	return l.due(ctx, l.expiryKey(), t, limit)
}

// InFlight lists submitted jobs submitted at or before t, oldest first.
func (l *Ledger) InFlight(ctx context.Context, t time.Time, limit int64) ([]Ref, []time.Time, error) {
	return l.due(ctx, l.inflightKey(), t, limit)
}

// InFlightCount is the number of submitted jobs of the namespace (every batch, every worker).
func (l *Ledger) InFlightCount(ctx context.Context) (int64, error) {
	return l.rdb.ZCard(ctx, l.inflightKey()).Result()
}

// Key names a key of the namespace that lives beside the ledger but outside its schema (the
// worker's learned generation times), with the ledger's prefix: on a Cluster it shares the
// namespace's hash slot.
func (l *Ledger) Key(name string) string { return l.kp + name }

// ms formats a time as Unix milliseconds.
func ms(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func fromMS(s string) time.Time {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}
