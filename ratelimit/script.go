package ratelimit

import "github.com/redis/go-redis/v9"

// The shared state of one budget lives in a hash (KEYS[1]) and a sorted set of grants (KEYS[2]),
// the log: one member per grant, scored by the time it was granted for. Both keys carry the same
// hash tag, so the scripts also run on Redis Cluster. Times are integer microseconds of Redis
// TIME, passed and stored with %d because Lua's default number formatting keeps only 14 digits.
// Hash fields:
//
//	rate     current adaptive rate, events per second (a window of span holds rate*span grants)
//	upd      when the additive increase was last applied
//	cool     no grant before this (429 cool-down)
//	ceil     ceiling learned from 429s, events per Per (0: none, use the configured Events)
//	ceil_at  when ceil was learned; it is forgotten ProbeAfter later
//	seq      grant counter, which makes the log's members unique
//	jm, jm_at  margin learned from jitter beyond the configured one (µs), and when it was set
//	ep, ep_end, ep_rate     current 429 episode: start, end of its cool-down, rate at its start
//	ep_jit   1 when the episode is jitter (a lone 429 at the ceiling): it teaches nothing
//	prev_ceil, last_prev, last_end   ceilings before this and the previous episode, and the
//	                                 previous episode's end: to undo what a storm taught
//
// ARGV common to take and throttle:
//
//	1 now (µs) or "" for Redis TIME   2 events   3 per (µs)   4 span = per*(1+margin) (µs)
//	5 floor as a fraction of the rate  6 additive increase per window as a fraction of the ceiling
//	7 probe-after (µs, 0 = keep forever)   8 key TTL (ms)
const prelude = `
local skey, lkey = KEYS[1], KEYS[2]
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local events = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local span = tonumber(ARGV[4])
local minfrac = tonumber(ARGV[5])
local alpha = tonumber(ARGV[6])
local probe = tonumber(ARGV[7])
local ttl = tonumber(ARGV[8])

local function int(x) return string.format('%d', x) end
local function flt(x) return string.format('%.17g', x) end

local h = redis.call('HMGET', skey, 'cool', 'rate', 'upd', 'ceil', 'ceil_at', 'jm', 'jm_at')
local cool = tonumber(h[1]) or 0
local rate = tonumber(h[2])
local upd = tonumber(h[3]) or now
local ceil = tonumber(h[4]) or 0
local ceil_at = tonumber(h[5]) or 0

-- The arrival margin is the configured one (span - per) and a learned one, jm, which jitter
-- raises (see throttle) and which halves every ten windows without it.
local base = span - per
local jm = tonumber(h[6]) or 0
local jm_at = tonumber(h[7]) or 0
if jm > 0 then
  jm = jm * 0.5 ^ ((now - jm_at) / (10 * per))
  if jm < base / 8 then jm = 0 end
end
local win = span + math.floor(jm)

-- A learned ceiling is trusted for a while only: forgetting it is how the limiter probes
-- above it again, rarely.
if ceil > 0 and probe > 0 and now - ceil_at >= probe then ceil = 0 end

local function ceilEvents(c)
  if c > 0 and c < events then return c end
  return events
end
local cap, floor
local function bounds()
  cap = ceilEvents(ceil) * 1e6 / span
  floor = math.min(cap, minfrac * events * 1e6 / span)
end
bounds()
if rate == nil then rate = cap end
-- Additive increase, counted only outside cool-downs.
local from = math.max(upd, cool)
if now > from then
  rate = rate + alpha * cap * (now - from) / per
  upd = now
end
rate = math.max(floor, math.min(cap, rate))

-- allowance is how many grants a window may hold at the current rate, and that window: n per
-- span and the learned margin, or, below one per span, one per 1/rate.
local function allowance()
  local n = math.floor(rate * span / 1e6 + 1e-9)
  if n >= 1 then return n, win end
  return 1, math.max(win, math.ceil(1e6 / rate))
end

-- Grants older than two windows can no longer hold a grant back nor be measured.
local _, oldest = allowance()
redis.call('ZREMRANGEBYSCORE', lkey, '-inf', '(' .. int(now - 2 * oldest))

-- earliest is the first time at or after t when one more grant fits: not in a cool-down, not
-- before the newest grant (grants enter the log in time order), and more than a window after the
-- n-th newest, so that no closed window of that length ever holds more than n grants.
local function earliest(t)
  local n, win = allowance()
  local s = math.max(t, cool)
  local top = redis.call('ZREVRANGE', lkey, 0, 0, 'WITHSCORES')
  if #top > 0 then s = math.max(s, tonumber(top[2])) end
  local nth = redis.call('ZREVRANGE', lkey, n - 1, n - 1, 'WITHSCORES')
  if #nth > 0 then s = math.max(s, tonumber(nth[2]) + win + 1) end
  return s
end

local function save(extra)
  local args = {'cool', int(cool), 'rate', flt(rate), 'upd', int(upd), 'ceil', int(ceil), 'ceil_at', int(ceil_at)}
  for i = 1, #extra do args[#args + 1] = extra[i] end
  redis.call('HSET', skey, unpack(args))
  local ms = math.max(ttl, math.ceil((cool - now) / 1000) + ttl)
  redis.call('PEXPIRE', skey, ms)
  redis.call('PEXPIRE', lkey, ms)
end
`

// takeScript grants the earliest slot that fits the window if it is at most ARGV[9] µs away.
// Slots fit when no closed window of length span holds more than rate*span of them, and
// rate*span never exceeds events: a call granted for a slot may reach the API up to span-per
// late and the API still never sees more than events in any window of length per.
//
// ARGV 9 max delay (µs).
// Returns {allowed, delay or retry-after (µs), rate, ceil, cool-down left (µs), member,
// time from now until a further grant could fit (µs), arrival margin (µs), further grants that
// fit now}.
var takeScript = redis.NewScript(prelude + `
local maxd = tonumber(ARGV[9])
local slot = earliest(now)
if slot - now > maxd then
  return {0, int(slot - now), flt(rate), ceil, int(math.max(0, cool - now)), '', int(slot - now), int(win - per), 0}
end
local member = int(slot) .. '-' .. redis.call('HINCRBY', skey, 'seq', 1)
redis.call('ZADD', lkey, int(slot), member)
local nxt = earliest(slot)
local free = 0
if nxt <= now then
  local n = allowance()
  free = n - redis.call('ZCOUNT', lkey, int(now - win), '+inf')
end
save({})
return {1, int(slot - now), flt(rate), ceil, int(math.max(0, cool - now)), member, int(nxt - now), int(win - per),
  math.max(0, free)}
`)

// throttleScript records a call refused as rate limited (429).
//
// The refused call was granted but not accepted, so its grant leaves the log (the newest grant
// already due: which of the calls in flight was refused is not known, and they are alike). A 429
// starts an episode unless one is still cooling down. The grants left in the window (span and
// the learned margin) before the episode's start measure the true limit: below learnBelow of the current
// ceiling it becomes the new ceiling; every further 429 of the episode takes one more grant off
// and measures again. A window that accepted nothing measures nothing (Kie refusing everything,
// not a rate limit): it restores the ceiling from before the storm instead, so a storm can never
// teach a ceiling of 0. An episode cools down for a window, except a lone one (no episode ended
// in the window before it) whose window was filled to the ceiling: that is jitter, it cools
// down for one slot and teaches nothing, unless its further 429s take the window below
// learnBelow of the ceiling: then it was no jitter, and cools down and measures as any other.
//
// ARGV 9 retry-after (µs, 0 if none)   10 multiplicative decrease   11 learnBelow.
// Returns {rate, ceil, cool-down left (µs), accepted in the measured window, arrival margin (µs)}.
var throttleScript = redis.NewScript(prelude + `
local retry = tonumber(ARGV[9])
local beta = tonumber(ARGV[10])
local below = tonumber(ARGV[11])
local e = redis.call('HMGET', skey, 'ep', 'ep_end', 'ep_rate', 'ep_jit', 'prev_ceil', 'last_prev', 'last_end')
local ep = tonumber(e[1]) or 0
local ep_end = tonumber(e[2]) or 0
local ep_rate = tonumber(e[3]) or rate
local ep_jit = tonumber(e[4]) or 0
local prev_ceil = tonumber(e[5]) or 0
local last_prev = tonumber(e[6]) or 0
local last_end = tonumber(e[7]) or 0

local raised = {}
local due = redis.call('ZREVRANGEBYSCORE', lkey, int(now), '-inf', 'LIMIT', 0, 1)
if #due > 0 then redis.call('ZREM', lkey, due[1]) end
local fresh = now >= ep_end
if fresh then
  last_prev, prev_ceil, last_end = prev_ceil, ceil, ep_end
  ep, ep_rate, ep_jit = now, rate, 0
end
local m = redis.call('ZCOUNT', lkey, '(' .. int(ep - win), int(ep))
if fresh then
  -- A lone 429 after a window the account filled to its ceiling is jitter: calls that fit
  -- reached Kie bunched. Kie's window frees up as its oldest call leaves it, about one slot
  -- later, so skipping one slot is enough; a second 429 within a window says it is not
  -- jitter and cools down for the whole window.
  local hold = per
  local lone = last_end == 0 or ep - last_end >= per
  if m > 0 and m >= below * ceilEvents(prev_ceil) then
    -- A window at the ceiling refused: calls reached Kie later than the margin allows for.
    -- The learned margin, beyond the configured one, doubles (to at most four times the
    -- configured one) and is kept while jitter lasts.
    jm = math.min(4 * base, math.max(2 * jm, base))
    raised = {'jm', int(jm), 'jm_at', int(now)}
    if lone then
      hold = math.ceil(1e6 / rate)
      ep_jit = 1
    end
  end
  ep_end = now + math.max(retry, hold)
else
  if ep_jit == 1 and m < below * ceilEvents(prev_ceil) then
    -- More calls of the jitter's window were refused than jitter explains: the window was
    -- over the limit after all. The episode cools down for a window and measures.
    ep_jit = 0
    ep_end = math.max(ep_end, ep + per)
  end
  if now + retry > ep_end then ep_end = now + retry end
end
cool = math.max(cool, ep_end)

if ep_jit == 1 then
  -- Jitter: the rate and the ceiling stand.
elseif m == 0 then
  if last_end > 0 and ep - last_end < per then
    ceil, prev_ceil = last_prev, last_prev
  else
    ceil = prev_ceil
  end
  rate = ep_rate * beta
else
  if m < below * ceilEvents(prev_ceil) then
    ceil, ceil_at = m, now
  end
  rate = math.max(ep_rate * beta, math.min(ep_rate, m * 1e6 / span))
end
bounds()
rate = math.max(floor, math.min(cap, rate))
upd = now
local fields = {'ep', int(ep), 'ep_end', int(ep_end), 'ep_rate', flt(ep_rate), 'ep_jit', int(ep_jit),
  'prev_ceil', int(prev_ceil), 'last_prev', int(last_prev), 'last_end', int(last_end)}
for i = 1, #raised do fields[#fields + 1] = raised[i] end
save(fields)
return {flt(rate), ceil, int(math.max(0, cool - now)), m, int(base + jm)}
`)

// releaseScript gives back a grant that a cancelled waiter will not use: it leaves the log, and
// its slot is free for the next caller.
//
// ARGV 1 the grant's member.
var releaseScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)
