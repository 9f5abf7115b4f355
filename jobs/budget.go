package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Budgets. A batch may have a cap on the credits it spends, and the namespace (one Kie account)
// a floor under the account's balance. Every paid generate call first reserves its job's price
// against both in one script (Reserve), so however many workers race, reservations never add up
// past the cap. A job the budget cannot cover is held: it stays queued, in its batch's held set,
// with the reason on its record, and its submit task ends; it is released (its task queued
// again) when the cap is raised, the floor lowered, the balance topped up, or a reservation is
// given back. A reservation becomes spent when its job moves to submitted (the transition script
// settles it, in the same step that records Kie's task id), stays spent when a call that may have
// reached Kie is cut off (interrupted), and is given back when the job leaves queued any other
// way or Kie refuses the call (Release).
//
// A model's price is the one configured (by any process of the namespace), else the one learned
// by measuring. When a budget needs an unknown price (the batch has a cap, or the account a
// floor), the next submission of the model is sent alone — no other generate call of the
// namespace in flight (BeginCall) — between two readings of the account's balance, and the
// difference is recorded (Measured). Until then jobs of that model are sent one at a time, each
// allowed while its batch has any budget left: the one measuring submission may pass a cap by
// less than one image's price, once per model. Without a budget, an unknown price is not
// measured: such submissions are counted apart (BatchBudget.Unpriced).
//
// The floor is checked against an estimate of the balance: the last reading of Kie's credit
// endpoint less everything reserved since, and less the calls that were in flight when it was
// read (which may or may not be in the reading). The estimate errs low; when it is what stops a
// job, the caller reads the balance again first (NeedBalance).

// Credits is an amount of Kie credits, counted in thousandths so that budgets add up exactly
// whatever fractions Kie bills.
type Credits int64

const creditUnit = 1000

// CreditsOf converts a number of credits.
func CreditsOf(v float64) Credits { return Credits(math.Round(v * creditUnit)) }

// Float is c as a number of credits.
func (c Credits) Float() float64 { return float64(c) / creditUnit }

// String formats c as a number of credits, without trailing zeros.
func (c Credits) String() string { return strconv.FormatFloat(c.Float(), 'f', -1, 64) }

// Budget keys and the job fields they use.
const (
	fReserved = "rc" // credits reserved for the job's next submission
	// fMeasuring marks a reservation of nothing: "1" for a submission that measures its model's
	// price, "u" for one whose price is unknown and needed by no budget.
	fMeasuring = "rm"
	fCredits   = "cr" // credits spent on the job's submissions
	fHeld      = "hr" // why the budget holds the job, while it does

	bCap       = "cap"   // the batch's cap
	bSpent     = "spent" // credits spent by the batch's submissions
	bReserved  = "rsv"   // credits reserved for submissions under way
	bHeldCap   = "hc"    // jobs held by the cap
	bHeldFloor = "hf"    // jobs held by the floor
	bUnpriced  = "nu"    // submissions whose price is not in bSpent (unknown when they were made)

	aFloor    = "floor" // the account's floor
	aBalance  = "bal"   // the last balance read from Kie
	aBalAt    = "bat"   // when (ms)
	aBase     = "base"  // aTotal less what was reserved when the balance was read
	aTotal    = "tot"   // credits reserved (and not given back) by the namespace, ever
	aReserved = "rsv"   // credits reserved for submissions under way, every batch
	aSeq      = "bseq"  // balance readings started
	aSeqDone  = "bseqw" // the latest reading recorded
)

const (
	holdCap   = "cap"
	holdFloor = "floor"
)

func (l *Ledger) heldKey(b, kind string) string { return l.kp + "batch:" + b + ":held:" + kind }
func (l *Ledger) budgetKey() string             { return l.kp + "budget" }
func (l *Ledger) pricesKey() string             { return l.kp + "prices" }
func (l *Ledger) callsKey() string              { return l.kp + "budget:calls" }
func (l *Ledger) measureKey() string            { return l.kp + "budget:measure" }
func (l *Ledger) heldBatchesKey() string        { return l.kp + "budget:held" }

// luaFormatCredits formats thousandths of a credit as credits in Lua.
const luaFormatCredits = `
local function fmtc(v)
  local s = string.format('%.3f', v / 1000)
  s = string.gsub(s, '0+$', '')
  s = string.gsub(s, '%.$', '')
  return s
end
`

// reserveScript reserves a job's price against its batch's cap and the account's floor, or holds
// the job. A job that already holds a reservation keeps it (a redelivered task, a retry after the
// rate limit).
//
// A held job's dispatch ends with the hold (see dispatch.go): its submit task ends without
// reporting back, so a release that dispatches the job again before that task is gone leaves a
// dispatch the sweeper finds, instead of one the ending task would forget.
//
// KEYS: job, batch counters, batch held-by-cap set, batch held-by-floor set, budget, prices,
// measure lock, batches with held jobs, dispatched jobs.
// ARGV: ref, batch, model, configured price (-1 none), learned price lifetime ms (0 forever),
// balance just read ("1"), lock owner.
// Returns {outcome, price or reason, measuring}.
var reserveScript = redis.NewScript(luaFormatCredits + `
local ref = ARGV[1]
local function unhold()
  if redis.call('SREM', KEYS[3], ref) == 1 then redis.call('HINCRBY', KEYS[2], 'hc', -1) end
  if redis.call('SREM', KEYS[4], ref) == 1 then redis.call('HINCRBY', KEYS[2], 'hf', -1) end
  redis.call('HDEL', KEYS[1], 'hr')
end
local function hold(set, other, field, ofield, msg)
  if redis.call('SREM', other, ref) == 1 then redis.call('HINCRBY', KEYS[2], ofield, -1) end
  if redis.call('SADD', set, ref) == 1 then redis.call('HINCRBY', KEYS[2], field, 1) end
  redis.call('HSET', KEYS[1], 'hr', msg)
  redis.call('SADD', KEYS[8], ARGV[2])
  redis.call('ZREM', KEYS[9], ref)
  return {'held', msg, '0'}
end
if redis.call('HGET', KEYS[1], 's') ~= 'queued' then return {'gone', '', '0'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local price = tonumber(ARGV[4])
if price < 0 then
  local p = redis.call('HMGET', KEYS[6], ARGV[3], ARGV[3] .. ':at')
  local life = tonumber(ARGV[5])
  if p[1] and (life <= 0 or now - tonumber(p[2] or '0') < life) then price = tonumber(p[1]) end
else
  -- A configured price is known to the namespace: processes configured without one, and the
  -- commands that release held jobs, use it.
  redis.call('HSET', KEYS[6], ARGV[3], price, ARGV[3] .. ':at', now)
end
local owner = redis.call('GET', KEYS[7])
if owner and owner ~= ARGV[7] then return {'wait', 'a model price is being measured', '0'} end
local rc = redis.call('HGET', KEYS[1], 'rc')
if rc then
  local m = redis.call('HGET', KEYS[1], 'rm') or ''
  if m == '' then return {'ok', rc, '0'} end
  if m == '1' and price < 0 then return {'ok', rc, '1'} end
  -- A reservation of nothing (a measurement, or a job whose price was unknown and needed by no
  -- budget) is made again: the price may be known now, or a budget set.
  redis.call('HDEL', KEYS[1], 'rc', 'rm')
end
local b = redis.call('HMGET', KEYS[2], 'cap', 'spent', 'rsv')
local cap = tonumber(b[1])
local used = tonumber(b[2] or '0') + tonumber(b[3] or '0')
if cap and ((price >= 0 and used + price > cap) or (price < 0 and used >= cap)) then
  return hold(KEYS[3], KEYS[4], 'hc', 'hf', 'budget: batch cap ' .. fmtc(cap) .. ' credits reached')
end
local a = redis.call('HMGET', KEYS[5], 'floor', 'bal', 'base', 'tot')
local floor = tonumber(a[1])
if price < 0 and not cap and not floor then
  -- No budget needs the price: the job goes as it would without one, and its batch counts it
  -- among the submissions its spend leaves out.
  unhold()
  redis.call('HSET', KEYS[1], 'rc', '0', 'rm', 'u')
  return {'ok', '0', '0'}
end
if floor then
  local bal = tonumber(a[2])
  if not bal then
    if ARGV[6] == '1' then return {'wait', 'the account balance could not be read', '0'} end
    return {'balance', '', '0'}
  end
  local pending = tonumber(a[4] or '0') - tonumber(a[3] or '0')
  local est = bal - pending
  if (price >= 0 and est - price < floor) or (price < 0 and est <= floor) then
    if ARGV[6] ~= '1' and pending > 0 then return {'balance', '', '0'} end
    return hold(KEYS[4], KEYS[3], 'hf', 'hc', 'budget: account balance below floor of ' .. fmtc(floor) .. ' credits')
  end
end
unhold()
if price < 0 then
  redis.call('HSET', KEYS[1], 'rc', '0', 'rm', '1')
  return {'measure', '0', '1'}
end
redis.call('HSET', KEYS[1], 'rc', price)
redis.call('HINCRBY', KEYS[2], 'rsv', price)
redis.call('HINCRBY', KEYS[5], 'rsv', price)
redis.call('HINCRBY', KEYS[5], 'tot', price)
return {'ok', tostring(price), '0'}
`)

// Outcome of Reserve.
type ReserveOutcome int

const (
	// Reserved: the job's price is reserved; send it.
	Reserved ReserveOutcome = iota
	// Measure: the model's price is unknown; send the job as its measurement (BeginCall).
	Measure
	// Wait: another submission is measuring a price; try again shortly.
	Wait
	// NeedBalance: the floor needs a fresh balance; read it (RecordBalance) and reserve again.
	NeedBalance
	// Held: the budget cannot cover the job; it stays queued, held, until released.
	Held
	// NotQueued: the job is no longer queued; nothing to reserve.
	NotQueued
)

// ReserveRequest is what Reserve needs to know beside the job.
type ReserveRequest struct {
	Model string // the model the job uses
	// Price is the configured price of Model, when PriceKnown; otherwise the price learned by a
	// measurement is used, and without one the job measures it.
	Price      Credits
	PriceKnown bool
	// FreshBalance says the balance was just read (after a NeedBalance).
	FreshBalance bool
}

// Reservation is what Reserve decided.
type Reservation struct {
	Outcome ReserveOutcome
	Price   Credits // reserved for the job (0 for a measurement)
	Reason  string  // why the job is held, or why to wait
}

// Reserve reserves the price of a queued job's next submission against its batch's cap and the
// account's floor, or holds the job (see the budget comment above). Call it before anything is
// sent to Kie; a job that holds a reservation keeps it until it is submitted (spent) or leaves
// queued otherwise or Release gives it back.
func (l *Ledger) Reserve(ctx context.Context, r Ref, req ReserveRequest) (Reservation, error) {
	price := int64(-1)
	if req.PriceKnown {
		price = int64(max(req.Price, 0))
	}
	fresh := "0"
	if req.FreshBalance {
		fresh = "1"
	}
	keys := []string{l.jobKey(r), l.batchKey(r.Batch), l.heldKey(r.Batch, holdCap), l.heldKey(r.Batch, holdFloor),
		l.budgetKey(), l.pricesKey(), l.measureKey(), l.heldBatchesKey(), l.dispatchedKey()}
	res, err := reserveScript.Run(ctx, l.rdb, keys, r.String(), r.Batch, req.Model, price, l.retention.Milliseconds(), fresh, r.String()).StringSlice()
	if err != nil {
		return Reservation{}, fmt.Errorf("ledger %s: reserving credits: %w", r, err)
	}
	if len(res) != 3 {
		return Reservation{}, fmt.Errorf("ledger %s: reserving credits: unexpected answer %q", r, res)
	}
	switch res[0] {
	case "ok":
		p, _ := strconv.ParseInt(res[1], 10, 64)
		if res[2] == "1" {
			return Reservation{Outcome: Measure}, nil
		}
		return Reservation{Outcome: Reserved, Price: Credits(p)}, nil
	case "measure":
		return Reservation{Outcome: Measure}, nil
	case "wait":
		return Reservation{Outcome: Wait, Reason: res[1]}, nil
	case "balance":
		return Reservation{Outcome: NeedBalance}, nil
	case "held":
		return Reservation{Outcome: Held, Reason: res[1]}, nil
	}
	return Reservation{Outcome: NotQueued}, nil
}

// releaseScript gives back a queued job's reservation.
// KEYS: job, batch counters, budget. Returns the credits given back.
var releaseScript = redis.NewScript(`
local rc = tonumber(redis.call('HGET', KEYS[1], 'rc') or '')
if not rc then return 0 end
redis.call('HDEL', KEYS[1], 'rc', 'rm')
if redis.call('HGET', KEYS[1], 's') ~= 'queued' then return 0 end
redis.call('HINCRBY', KEYS[2], 'rsv', 0 - rc)
redis.call('HINCRBY', KEYS[3], 'rsv', 0 - rc)
redis.call('HINCRBY', KEYS[3], 'tot', 0 - rc)
return rc
`)

// Release gives back the reservation of a queued job whose generate call Kie refused (nothing
// was billed). It reports the credits given back.
func (l *Ledger) Release(ctx context.Context, r Ref) (Credits, error) {
	v, err := releaseScript.Run(ctx, l.rdb, []string{l.jobKey(r), l.batchKey(r.Batch), l.budgetKey()}).Int64()
	if err != nil {
		return 0, fmt.Errorf("ledger %s: releasing its reservation: %w", r, err)
	}
	return Credits(v), nil
}

// callScript admits a generate call: no call starts while a price is measured, and a measuring
// call starts only once no other call is in flight. Calls are kept with a lease, so a process
// that dies mid-call holds nothing past it.
// KEYS: calls, measure lock. ARGV: call token, lock owner, measuring ("1"), lease ms.
var callScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local owner = redis.call('GET', KEYS[2])
if ARGV[3] == '1' then
  if owner and owner ~= ARGV[2] then return 'wait' end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
  if redis.call('ZCARD', KEYS[1]) > 0 then return 'drain' end
elseif owner then
  return 'wait'
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
return 'ok'
`)

// Call is a generate call admitted by BeginCall.
type Call struct {
	l     *Ledger
	token string
	owner string
	// Measuring says the call measures its model's price: no other call of the namespace is in
	// flight, and none starts until EndMeasure or Measured.
	Measuring bool
}

// ErrCallWait is returned by BeginCall when the call must wait for a price measurement;
// ErrCallDrain when a measuring call waits for the calls in flight to end.
var (
	ErrCallWait  = errors.New("a model price is being measured")
	ErrCallDrain = errors.New("measuring a price: waiting for the generate calls in flight to end")
)

// BeginCall admits the generate call of a job reserved by Reserve (measuring when it answered
// Measure). lease bounds how long the call may hold its place if its process dies. End the call
// once Kie answered (or the call certainly ended).
func (l *Ledger) BeginCall(ctx context.Context, r Ref, measuring bool, lease time.Duration) (*Call, error) {
	c := &Call{l: l, token: newCallToken(), owner: r.String(), Measuring: measuring}
	m := "0"
	if measuring {
		m = "1"
	}
	res, err := callScript.Run(ctx, l.rdb, []string{l.callsKey(), l.measureKey()}, c.token, c.owner, m, lease.Milliseconds()).Text()
	if err != nil {
		return nil, fmt.Errorf("ledger %s: admitting its generate call: %w", r, err)
	}
	switch res {
	case "wait":
		return nil, ErrCallWait
	case "drain":
		return nil, ErrCallDrain
	}
	return c, nil
}

// End records that the call has ended (Kie answered, or the call failed).
func (c *Call) End(ctx context.Context) error {
	if err := c.l.rdb.ZRem(ctx, c.l.callsKey(), c.token).Err(); err != nil {
		return fmt.Errorf("ledger: ending a generate call: %w", err)
	}
	return nil
}

// endMeasureScript frees the measure lock if owner holds it. KEYS: lock. ARGV: owner.
var endMeasureScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

// EndMeasure ends a measuring call without a price (Kie refused the call, or the balance could
// not be read): the next submission of the model measures again.
func (c *Call) EndMeasure(ctx context.Context) error {
	if !c.Measuring {
		return nil
	}
	if err := endMeasureScript.Run(ctx, c.l.rdb, []string{c.l.measureKey()}, c.owner).Err(); err != nil {
		return fmt.Errorf("ledger: ending a price measurement: %w", err)
	}
	return nil
}

// measuredScript records a measured price and charges it to the job and its batch.
// KEYS: job, batch counters, budget, prices, lock. ARGV: model, price, owner.
var measuredScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = tonumber(ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], p, ARGV[1] .. ':at', now)
redis.call('HINCRBY', KEYS[2], 'spent', p)
redis.call('HINCRBY', KEYS[2], 'nu', -1)
redis.call('HINCRBY', KEYS[3], 'tot', p)
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'cr', p) end
if redis.call('GET', KEYS[5]) == ARGV[3] then redis.call('DEL', KEYS[5]) end
return 1
`)

// Measured records the price a measuring call found for its model, charges it to the job and
// its batch, and ends the measurement.
func (c *Call) Measured(ctx context.Context, r Ref, model string, price Credits) error {
	l := c.l
	keys := []string{l.jobKey(r), l.batchKey(r.Batch), l.budgetKey(), l.pricesKey(), l.measureKey()}
	if err := measuredScript.Run(ctx, l.rdb, keys, model, int64(price), c.owner).Err(); err != nil {
		return fmt.Errorf("ledger %s: recording the price of %s: %w", r, model, err)
	}
	return nil
}

func newCallToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LearnedPrices are the prices known to the namespace per model — measured, or configured in a
// process that reserved with one — that are still within their lifetime (the ledger's
// retention: prices change, so a price is measured again after it).
func (l *Ledger) LearnedPrices(ctx context.Context) (map[string]Credits, error) {
	m, err := l.rdb.HGetAll(ctx, l.pricesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: reading learned prices: %w", err)
	}
	out := map[string]Credits{}
	now := l.now()
	for k, v := range m {
		at, ok := m[k+":at"]
		if !ok {
			continue // k is a time, or a price without one
		}
		p, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		if now.Sub(fromMS(at)) >= l.retention {
			continue
		}
		out[k] = Credits(p)
	}
	return out, nil
}

// SetMaxCredits sets a batch's cap (nil removes it). It does not release held jobs: see
// Enqueuer.SetMaxCredits.
func (l *Ledger) SetMaxCredits(ctx context.Context, batch string, limit *Credits) error {
	var err error
	if limit == nil {
		err = l.rdb.HDel(ctx, l.batchKey(batch), bCap).Err()
	} else {
		err = l.rdb.HSet(ctx, l.batchKey(batch), bCap, int64(*limit)).Err()
	}
	if err != nil {
		return fmt.Errorf("ledger %s: setting its credit cap: %w", batch, err)
	}
	return nil
}

// SetMinBalance sets the account's floor (nil removes it): no submission may take the balance
// below it. It does not release held jobs: see Enqueuer.SetMinBalance.
func (l *Ledger) SetMinBalance(ctx context.Context, floor *Credits) error {
	var err error
	if floor == nil {
		err = l.rdb.HDel(ctx, l.budgetKey(), aFloor).Err()
	} else {
		err = l.rdb.HSet(ctx, l.budgetKey(), aFloor, int64(*floor)).Err()
	}
	if err != nil {
		return fmt.Errorf("ledger: setting the balance floor: %w", err)
	}
	return nil
}

// BalanceReading is a reading of the account's balance under way (see StartBalanceReading).
type BalanceReading struct {
	seq, base int64
}

// markScript starts a balance reading. KEYS: budget. Returns {seq, base}.
var markScript = redis.NewScript(`
local seq = redis.call('HINCRBY', KEYS[1], 'bseq', 1)
local a = redis.call('HMGET', KEYS[1], 'tot', 'rsv')
return {seq, tonumber(a[1] or '0') - tonumber(a[2] or '0')}
`)

// StartBalanceReading is called right before the balance is read from Kie: what is reserved at
// that moment may or may not be in the reading, so the estimate counts it as still to pay.
func (l *Ledger) StartBalanceReading(ctx context.Context) (BalanceReading, error) {
	v, err := markScript.Run(ctx, l.rdb, []string{l.budgetKey()}).Int64Slice()
	if err != nil || len(v) != 2 {
		return BalanceReading{}, fmt.Errorf("ledger: starting a balance reading: %v", err)
	}
	return BalanceReading{seq: v[0], base: v[1]}, nil
}

// recordBalanceScript keeps a reading unless a later-started one is recorded already.
// KEYS: budget. ARGV: seq, base, balance, now ms.
var recordBalanceScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'bseqw') or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'bseqw', ARGV[1], 'base', ARGV[2], 'bal', ARGV[3], 'bat', ARGV[4])
return 1
`)

// RecordBalance records the balance read from Kie for reading.
func (l *Ledger) RecordBalance(ctx context.Context, reading BalanceReading, balance Credits) error {
	err := recordBalanceScript.Run(ctx, l.rdb, []string{l.budgetKey()}, reading.seq, reading.base, int64(balance), ms(l.now())).Err()
	if err != nil {
		return fmt.Errorf("ledger: recording the balance: %w", err)
	}
	return nil
}

// BatchBudget is a batch's spending.
type BatchBudget struct {
	Cap       Credits // meaningful when HasCap
	HasCap    bool
	Spent     Credits // charged for submissions made
	Reserved  Credits // reserved for submissions under way
	HeldCap   int64   // jobs the cap holds
	HeldFloor int64   // jobs the account's floor holds
	// Unpriced are submissions Spent leaves out: their model's price was unknown when they were
	// made, and no budget needed it measured.
	Unpriced int64
}

// Held is the number of jobs the budget holds.
func (b BatchBudget) Held() int64 { return b.HeldCap + b.HeldFloor }

// HeldReason says why the budget holds jobs of the batch, "" when it holds none.
func (b BatchBudget) HeldReason() string {
	switch {
	case b.HeldCap > 0 && b.HeldFloor > 0:
		return fmt.Sprintf("budget: batch cap %s credits reached; account balance below floor", b.Cap)
	case b.HeldCap > 0:
		return fmt.Sprintf("budget: batch cap %s credits reached", b.Cap)
	case b.HeldFloor > 0:
		return "budget: account balance below floor"
	}
	return ""
}

// Budget reads a batch's cap, spending and held jobs.
func (l *Ledger) Budget(ctx context.Context, batch string) (BatchBudget, error) {
	v, err := l.rdb.HMGet(ctx, l.batchKey(batch), bCap, bSpent, bReserved, bHeldCap, bHeldFloor, bUnpriced).Result()
	if err != nil {
		return BatchBudget{}, fmt.Errorf("ledger %s: reading its budget: %w", batch, err)
	}
	return batchBudget(v), nil
}

// intAt reads the integer at v[i] of an HMGET answer; ok is false for a field that is absent.
func intAt(v []any, i int) (int64, bool) {
	s, ok := v[i].(string)
	if !ok {
		return 0, false
	}
	x, err := strconv.ParseInt(s, 10, 64)
	return x, err == nil
}

func batchBudget(v []any) BatchBudget {
	n := func(i int) (int64, bool) { return intAt(v, i) }
	var b BatchBudget
	c, ok := n(0)
	b.Cap, b.HasCap = Credits(c), ok
	s, _ := n(1)
	r, _ := n(2)
	b.Spent, b.Reserved = Credits(s), Credits(r)
	b.HeldCap, _ = n(3)
	b.HeldFloor, _ = n(4)
	b.Unpriced, _ = n(5)
	return b
}

// AccountBudget is the namespace's floor and what it knows of the account's balance.
type AccountBudget struct {
	Floor    Credits // meaningful when HasFloor
	HasFloor bool
	// Balance is the last balance read from Kie, at BalanceAt (zero when never read), and
	// Estimate that less what was reserved since (and what was in flight when it was read).
	Balance, Estimate Credits
	BalanceAt         time.Time
}

// Account reads the account's floor and balance estimate.
func (l *Ledger) Account(ctx context.Context) (AccountBudget, error) {
	v, err := l.rdb.HMGet(ctx, l.budgetKey(), aFloor, aBalance, aBalAt, aBase, aTotal).Result()
	if err != nil {
		return AccountBudget{}, fmt.Errorf("ledger: reading the account's budget: %w", err)
	}
	n := func(i int) (int64, bool) { return intAt(v, i) }
	var a AccountBudget
	f, ok := n(0)
	a.Floor, a.HasFloor = Credits(f), ok
	bal, _ := n(1)
	at, _ := n(2)
	base, _ := n(3)
	tot, _ := n(4)
	a.Balance, a.Estimate = Credits(bal), Credits(bal-(tot-base))
	if at > 0 {
		a.BalanceAt = time.UnixMilli(at)
	}
	return a, nil
}

// HeldBatches lists the batches that hold (or recently held) jobs for the budget.
func (l *Ledger) HeldBatches(ctx context.Context) ([]string, error) {
	return l.rdb.SMembers(ctx, l.heldBatchesKey()).Result()
}

// popHeldScript releases up to n held jobs of one kind.
// KEYS: held set, batch counters, the batch's other held set, batches with held jobs.
// ARGV: n, counter field, batch.
var popHeldScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local out = {}
if n > 0 then out = redis.call('SPOP', KEYS[1], n) end
if #out > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], -#out) end
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('SCARD', KEYS[3]) == 0 then redis.call('SREM', KEYS[4], ARGV[3]) end
return out
`)

// unheldScript clears the hold reason of a released job unless it was held again meanwhile.
// KEYS: job, held by cap, held by floor. ARGV: ref.
var unheldScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  redis.call('HDEL', KEYS[1], 'hr')
end
return 1
`)

// Unhold releases up to capN jobs of a batch held by its cap and up to floorN held by the
// account's floor, and returns them: their submit tasks must be queued again (Requeue). A
// released job reserves again when its task runs, so releasing more than fit only holds them
// again.
func (l *Ledger) Unhold(ctx context.Context, batch string, capN, floorN int64) ([]Ref, error) {
	if err := l.loadScripts(ctx, unheldScript); err != nil {
		return nil, err
	}
	var out []Ref
	for _, k := range []struct {
		kind, other, field string
		n                  int64
	}{{holdCap, holdFloor, bHeldCap, capN}, {holdFloor, holdCap, bHeldFloor, floorN}} {
		for k.n > 0 {
			n := min(k.n, opChunk)
			k.n -= n
			keys := []string{l.heldKey(batch, k.kind), l.batchKey(batch), l.heldKey(batch, k.other), l.heldBatchesKey()}
			refs, err := popHeldScript.Run(ctx, l.rdb, keys, n, k.field, batch).StringSlice()
			if err != nil {
				return out, fmt.Errorf("ledger %s: releasing held jobs: %w", batch, err)
			}
			popped := make([]Ref, 0, len(refs))
			for _, s := range refs {
				if r, err := ParseRef(s); err == nil {
					popped = append(popped, r)
				}
			}
			_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, r := range popped {
					unheldScript.EvalSha(ctx, p, []string{l.jobKey(r), l.heldKey(batch, holdCap), l.heldKey(batch, holdFloor)}, r.String())
				}
				return nil
			})
			if err != nil {
				return out, fmt.Errorf("ledger %s: releasing held jobs: %w", batch, err)
			}
			out = append(out, popped...)
			if int64(len(refs)) < n {
				break
			}
		}
	}
	return out, nil
}

// Room says how many held jobs of a batch could now be covered, at price (the smallest price
// a held job may have; 0 when none is known, which lets one job through to measure it): capN
// by the cap, floorN by the account's floor. A batch without a cap (or an account without a
// floor) lets all its jobs held by it through.
func (l *Ledger) Room(ctx context.Context, batch string, price Credits) (capN, floorN int64, err error) {
	b, err := l.Budget(ctx, batch)
	if err != nil {
		return 0, 0, err
	}
	fit := func(room Credits) int64 {
		switch {
		case room <= 0:
			return 0
		case price <= 0:
			return 1
		}
		return int64(room / price)
	}
	capN = b.HeldCap
	if b.HasCap {
		capN = min(capN, fit(b.Cap-b.Spent-b.Reserved))
	}
	if b.HeldFloor > 0 {
		a, err := l.Account(ctx)
		if err != nil {
			return 0, 0, err
		}
		floorN = b.HeldFloor
		if a.HasFloor {
			if a.BalanceAt.IsZero() {
				floorN = min(floorN, 1) // one finds the balance out
			} else {
				floorN = min(floorN, fit(a.Estimate-a.Floor))
			}
		}
	}
	return capN, floorN, nil
}

// SmallestPrice is the smallest of the prices known for any model, configured or learned (0
// when none is).
func SmallestPrice(configured, learned map[string]Credits) Credits {
	var p Credits
	for _, m := range []map[string]Credits{configured, learned} {
		for _, v := range m {
			if v > 0 && (p == 0 || v < p) {
				p = v
			}
		}
	}
	return p
}

// forgetScript drops a batch from the batches with held jobs once it holds none (a cancel, or
// jobs that ended otherwise). KEYS: held by cap, held by floor, batches with held jobs. ARGV: batch.
var forgetScript = redis.NewScript(`
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('SCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return 1
`)

// ReleaseHeld releases the held jobs of a batch that its budget can now cover, at the smallest
// price known, and puts them back in line. It reports how many it released.
func ReleaseHeld(ctx context.Context, l *Ledger, batch string, price Credits) (int, error) {
	capN, floorN, err := l.Room(ctx, batch, price)
	if err != nil {
		return 0, err
	}
	if capN+floorN == 0 {
		keys := []string{l.heldKey(batch, holdCap), l.heldKey(batch, holdFloor), l.heldBatchesKey()}
		if err := forgetScript.Run(ctx, l.rdb, keys, batch).Err(); err != nil {
			return 0, fmt.Errorf("ledger %s: %w", batch, err)
		}
		return 0, nil
	}
	refs, err := l.Unhold(ctx, batch, capN, floorN)
	if err != nil {
		return 0, err
	}
	// Back at the front of their batch's line, in their class: they had their turn.
	_, err = l.PutInLine(ctx, true, refs...)
	return len(refs), err
}

// SetMaxCredits sets a batch's cap (nil removes it) and releases the held jobs it now covers,
// at the smallest price known (configured, by model, or learned). It reports how many it
// released.
func (e *Enqueuer) SetMaxCredits(ctx context.Context, batch string, limit *Credits, configured map[string]Credits) (int, error) {
	if err := e.ledger.SetMaxCredits(ctx, batch, limit); err != nil {
		return 0, err
	}
	return e.releaseHeld(ctx, []string{batch}, configured)
}

// SetMinBalance sets the account's floor (nil removes it) and releases the held jobs of every
// batch that it now allows. It reports how many it released.
func (e *Enqueuer) SetMinBalance(ctx context.Context, floor *Credits, configured map[string]Credits) (int, error) {
	if err := e.ledger.SetMinBalance(ctx, floor); err != nil {
		return 0, err
	}
	batches, err := e.ledger.HeldBatches(ctx)
	if err != nil {
		return 0, err
	}
	return e.releaseHeld(ctx, batches, configured)
}

func (e *Enqueuer) releaseHeld(ctx context.Context, batches []string, configured map[string]Credits) (int, error) {
	learned, err := e.ledger.LearnedPrices(ctx)
	if err != nil {
		return 0, err
	}
	price := SmallestPrice(configured, learned)
	total := 0
	for _, b := range batches {
		n, err := ReleaseHeld(ctx, e.ledger, b, price)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// chargeScript charges paid submissions the ledger did not see to a job and its batch.
// KEYS: job, batch counters, budget. ARGV: credits, unpriced submissions.
var chargeScript = redis.NewScript(`
local c = tonumber(ARGV[1])
if c > 0 then
  redis.call('HINCRBY', KEYS[2], 'spent', c)
  redis.call('HINCRBY', KEYS[3], 'tot', c)
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'cr', c) end
end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[2], 'nu', ARGV[2]) end
return 1
`)

// Charge records submissions paid outside this ledger's sight — an in-memory ledger restoring
// a previous process's journal — against the job's batch: credits at a known price, or as
// unpriced submissions, so that the batch's cap counts them.
func (l *Ledger) Charge(ctx context.Context, r Ref, credits Credits, unpriced int) error {
	err := chargeScript.Run(ctx, l.rdb, []string{l.jobKey(r), l.batchKey(r.Batch), l.budgetKey()}, int64(credits), unpriced).Err()
	if err != nil {
		return fmt.Errorf("ledger %s: charging earlier submissions: %w", r, err)
	}
	return nil
}
