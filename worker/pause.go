package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The account pause is shared through Redis by every worker process: while it holds, calls to
// Kie wait, except for one probe at a time. A probe goes out when the pause's current interval
// has passed; if it succeeds (Kie answered anything but a pausing refusal) the pause ends at
// once and every process goes back to full speed; if it fails the next probe waits twice as long,
// up to the cause's cap. So a four-second maintenance window costs about four seconds and one
// probe interval, while a key revoked for good costs one call per cap.
//
// It is the only account pause; the rate limiters' cool-downs after a 429 are theirs. Times are
// Redis's (TIME), so workers whose clocks disagree agree on when the next probe is due.

// probeLease is how long a probe holds the right to be the only one. A probe that has not
// reported by then (its process died, its call hangs) lets another go.
const probeLease = 10 * time.Second

// pauseTick is how often a call waiting on a probe's outcome looks again.
const pauseTick = 100 * time.Millisecond

type pause struct {
	rdb redis.UniversalClient
	key string
	now func() time.Time
}

// causeByName reads back the cause a pause was stored with.
var causeByName = func() map[string]Cause {
	m := map[string]Cause{}
	for c := CauseOther; c <= CauseNotFound; c++ {
		m[c.String()] = c
	}
	return m
}()

// Hash fields: cause, until (ms: no probe before), step (ms: the current interval), probe (ms:
// the lease of the probe out, 0 when none), scope ("generate" or "all").
const pauseNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// admitScript: ARGV 1 probe lease (ms), 2 "1" when the call is a generate call.
// Returns {0} go ahead, {1, ms to the next probe, cause} wait, {2, 0, cause} go ahead as the
// probe, {3, ms left of the probe's lease, cause} wait for the probe's outcome.
var admitScript = redis.NewScript(pauseNow + `
local h = redis.call('HMGET', KEYS[1], 'until', 'probe', 'cause', 'scope')
if not h[1] then return {0, 0, ''} end
if h[4] == 'generate' and ARGV[2] ~= '1' then return {0, 0, ''} end
local u = tonumber(h[1])
if now < u then return {1, u - now, h[3]} end
local p = tonumber(h[2]) or 0
if p > now then return {3, p - now, h[3]} end
redis.call('HSET', KEYS[1], 'probe', now + tonumber(ARGV[1]))
return {2, 0, h[3]}
`)

// startScript pauses the account unless it is paused already: a refusal met by a call that was
// not the probe (it was on its way when the pause began) does not move the schedule, except for
// a longer Retry-After. ARGV 1 cause, 2 first interval (ms), 3 Retry-After (ms), 4 scope.
// Returns {wait ms, cause}.
var startScript = redis.NewScript(pauseNow + `
local retry = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'until', 'cause')
if h[1] then
  local u = tonumber(h[1])
  if now + retry > u then
    u = now + retry
    redis.call('HSET', KEYS[1], 'until', u)
    redis.call('PEXPIRE', KEYS[1], u - now + 86400000)
  end
  return {math.max(u - now, 0), h[2]}
end
local d = math.max(tonumber(ARGV[2]), retry)
redis.call('HSET', KEYS[1], 'cause', ARGV[1], 'until', now + d, 'step', ARGV[2], 'probe', 0, 'scope', ARGV[4])
redis.call('PEXPIRE', KEYS[1], d + 86400000)
return {d, ARGV[1]}
`)

// probedScript records a failed probe: the next one waits twice as long, within the cause's
// bounds. ARGV 1 cause, 2 first (ms), 3 cap (ms), 4 Retry-After (ms), 5 scope. Returns the wait (ms).
var probedScript = redis.NewScript(pauseNow + `
local first, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local step = tonumber(redis.call('HGET', KEYS[1], 'step') or '0') or 0
step = math.min(math.max(step * 2, first), cap)
local d = math.max(step, tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'cause', ARGV[1], 'until', now + d, 'step', step, 'probe', 0, 'scope', ARGV[5])
redis.call('PEXPIRE', KEYS[1], d + 86400000)
return d
`)

var releaseProbeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'probe', 0) end
return 1
`)

// liftScript ends the pause, if it is for ARGV[1] (any cause when empty).
var liftScript = redis.NewScript(`
if ARGV[1] == '' or redis.call('HGET', KEYS[1], 'cause') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`)

func scopeOf(c Cause) string {
	if submitsOnly(c) {
		return "generate"
	}
	return "all"
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// admit asks to call ep. It returns at once when the account is not paused (or the pause does
// not concern ep); probe is true when this call is the pause's probe, whose outcome must be
// reported (Worker.answered or refused). While paused it waits up to maxWait for the next probe
// or for a probe's success, then returns a *PausedError.
func (p *pause) admit(ctx context.Context, ep Endpoint, maxWait time.Duration) (probe bool, err error) {
	gen := "0"
	if ep == EndpointGenerate {
		gen = "1"
	}
	deadline := p.now().Add(maxWait)
	for {
		v, err := admitScript.Run(ctx, p.rdb, []string{p.key}, ms(probeLease), gen).Slice()
		if err != nil {
			return false, fmt.Errorf("reading the account pause: %w", err)
		}
		state, _ := v[0].(int64)
		if state == 0 || state == 2 {
			return state == 2, nil
		}
		wait, _ := v[1].(int64)
		cause, _ := v[2].(string)
		now := p.now()
		d := time.Duration(wait) * time.Millisecond
		left := deadline.Sub(now)
		nap := d // until the next probe is due
		if state == 3 {
			// A probe is out: look again soon, so that its success is seen at once.
			d, nap = min(d, time.Second), pauseTick
		}
		if nap > left {
			return false, &PausedError{Until: now.Add(d), Cause: causeByName[cause], now: now}
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(nap):
		}
	}
}

// release gives up a probe that was admitted but never sent (no rate-limit token came), so
// that the next call probes without waiting out the lease.
func (p *pause) release(ctx context.Context) {
	_ = releaseProbeScript.Run(context.WithoutCancel(ctx), p.rdb, []string{p.key}).Err()
}

// start pauses the account for cause, unless it is paused already, and returns the pause as a
// task waiting on it sees it.
func (p *pause) start(ctx context.Context, cause Cause, retryAfter time.Duration) (*PausedError, error) {
	s := probeSchedules[cause]
	v, err := startScript.Run(ctx, p.rdb, []string{p.key}, cause.String(), ms(s.first), ms(max(retryAfter, 0)), scopeOf(cause)).Slice()
	if err != nil {
		return nil, fmt.Errorf("pausing the account: %w", err)
	}
	wait, _ := v[0].(int64)
	name, _ := v[1].(string)
	now := p.now()
	return &PausedError{Until: now.Add(time.Duration(wait) * time.Millisecond), Cause: causeByName[name], now: now}, nil
}

// probeFailed records a probe refused for cause: the pause goes on, its interval doubled.
func (p *pause) probeFailed(ctx context.Context, cause Cause, retryAfter time.Duration) (*PausedError, error) {
	s := probeSchedules[cause]
	wait, err := probedScript.Run(ctx, p.rdb, []string{p.key}, cause.String(), ms(s.first), ms(s.cap), ms(max(retryAfter, 0)), scopeOf(cause)).Int64()
	if err != nil {
		return nil, fmt.Errorf("extending the account pause: %w", err)
	}
	now := p.now()
	return &PausedError{Until: now.Add(time.Duration(wait) * time.Millisecond), Cause: cause, now: now}, nil
}

// lift ends the pause if it is for cause (any pause when cause is CauseOther).
func (p *pause) lift(ctx context.Context, cause Cause) error {
	name := ""
	if cause != CauseOther {
		name = cause.String()
	}
	if err := liftScript.Run(ctx, p.rdb, []string{p.key}, name).Err(); err != nil {
		return fmt.Errorf("lifting the account pause: %w", err)
	}
	return nil
}

// get reports the pause, or nil when the account is not paused.
func (p *pause) get(ctx context.Context) (*PausedError, error) {
	m, err := p.rdb.HGetAll(ctx, p.key).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the account pause: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	var until int64
	fmt.Sscan(m["until"], &until)
	now := p.now()
	return &PausedError{Until: time.UnixMilli(until), Cause: causeByName[m["cause"]], now: now}, nil
}
