package ratelimit

import "github.com/redis/go-redis/v9"

// The shared state of one budget lives in a hash (KEYS[1]) and a list of recent grant times
// (KEYS[2]); both keys carry the same hash tag, so the scripts also run on Redis Cluster.
// Times are integer microseconds of Redis TIME, stored with %d because Lua's default number
// formatting keeps only 14 digits. Hash fields:
//
//	tat      next free slot: no grant before it (burst 1, so one slot per interval)
//	rate     current adaptive rate, events per second
//	upd      when the additive increase was last applied
//	cool     no grant before this (429 cool-down, maintenance pause)
//	ceil     ceiling learned from 429s, events per Per (0: none, use the configured Events)
//	ceil_at  when ceil was learned; it is forgotten ProbeAfter later
//	ep, ep_end, ep_rate     current 429 episode: start, end of its cool-down, rate at its start
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

local h = redis.call('HMGET', skey, 'tat', 'cool', 'rate', 'upd', 'ceil', 'ceil_at')
local tat = tonumber(h[1]) or 0
local cool = tonumber(h[2]) or 0
local rate = tonumber(h[3])
local upd = tonumber(h[4]) or now
local ceil = tonumber(h[5]) or 0
local ceil_at = tonumber(h[6]) or 0

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

local function save(extra)
  local args = {'tat', int(tat), 'cool', int(cool), 'rate', flt(rate), 'upd', int(upd),
    'ceil', int(ceil), 'ceil_at', int(ceil_at)}
  for i = 1, #extra do args[#args + 1] = extra[i] end
  redis.call('HSET', skey, unpack(args))
  local ms = math.max(ttl, math.ceil((cool - now) / 1000) + ttl)
  redis.call('PEXPIRE', skey, ms)
  redis.call('PEXPIRE', lkey, ms)
end
`

// takeScript grants the next slot if it is at most ARGV[9] µs away. Burst is 1: consecutive
// slots are at least 1/rate apart, and rate never exceeds events/span, so no window of length
// span holds more than events grants and no window of length per more than events/(1+margin)+1.
//
// ARGV 9 max delay (µs)   10 length of the grant log.
// Returns {allowed, delay or retry-after (µs), rate, ceil, cool-down left (µs), slot, tat}.
var takeScript = redis.NewScript(prelude + `
local maxd = tonumber(ARGV[9])
local loglen = tonumber(ARGV[10])
local slot = math.max(tat, now, cool)
if slot - now > maxd then
  return {0, int(slot - now), flt(rate), ceil, int(math.max(0, cool - now)), '', ''}
end
tat = math.ceil(slot + 1e6 / rate)
redis.call('LPUSH', lkey, int(slot))
redis.call('LTRIM', lkey, 0, loglen - 1)
save({})
return {1, int(slot - now), flt(rate), ceil, int(math.max(0, cool - now)), int(slot), int(tat)}
`)

// throttleScript records a refused call (429, or maintenance when ARGV[10] is "0").
//
// A 429 starts an episode unless one is still cooling down. The grants accepted in the window
// before the episode's start (the log, less one entry per refused call) measure the true limit:
// below learnBelow of the current ceiling it becomes the new ceiling. A window that accepted
// nothing measures nothing (Kie refusing everything, not a rate limit): it restores the ceiling
// from before the storm instead, so a storm can never teach a ceiling of 0. An episode cools
// down for a window, except a lone one (no episode ended in the window before it) whose window
// was filled to the ceiling: that is jitter, and it cools down for one slot.
//
// ARGV 9 retry-after (µs, 0 if none)   10 "1" learn from it (429) or "0" (maintenance)
// 11 multiplicative decrease   12 learnBelow.
// Returns {rate, ceil, cool-down left (µs), accepted in the measured window or -1}.
var throttleScript = redis.NewScript(prelude + `
local retry = tonumber(ARGV[9])
local learn = ARGV[10] == '1'
local beta = tonumber(ARGV[11])
local below = tonumber(ARGV[12])
local e = redis.call('HMGET', skey, 'ep', 'ep_end', 'ep_rate', 'prev_ceil', 'last_prev', 'last_end')
local ep = tonumber(e[1]) or 0
local ep_end = tonumber(e[2]) or 0
local ep_rate = tonumber(e[3]) or rate
local prev_ceil = tonumber(e[4]) or 0
local last_prev = tonumber(e[5]) or 0
local last_end = tonumber(e[6]) or 0

-- The refused call was granted but not accepted: drop one grant from the record.
redis.call('LPOP', lkey)
local m = -1
if not learn then
  if retry <= 0 then retry = per end
  cool = math.max(cool, now + retry)
else
  local fresh = now >= ep_end
  if fresh then
    last_prev, prev_ceil, last_end = prev_ceil, ceil, ep_end
    ep, ep_rate = now, rate
  end
  m = 0
  local v = redis.call('LRANGE', lkey, 0, -1)
  for i = 1, #v do
    local t = tonumber(v[i])
    if t <= ep and t > ep - per then m = m + 1 end
  end
  if fresh then
    -- A lone 429 after a window the account filled to its ceiling is jitter: calls spaced to
    -- fit reached Kie bunched. The window frees up as its oldest call leaves it, about one
    -- slot later, so skipping one slot is enough; a second 429 within a window says it is not
    -- jitter and cools down for the whole window.
    local hold = per
    local lone = last_end == 0 or ep - last_end >= per
    if lone and m > 0 and m >= below * ceilEvents(prev_ceil) then hold = math.ceil(1e6 / rate) end
    ep_end = now + math.max(retry, hold)
  elseif now + retry > ep_end then
    ep_end = now + retry
  end
  cool = math.max(cool, ep_end)

  if m == 0 then
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
end
save({'ep', int(ep), 'ep_end', int(ep_end), 'ep_rate', flt(ep_rate), 'prev_ceil', int(prev_ceil),
  'last_prev', int(last_prev), 'last_end', int(last_end)})
return {flt(rate), ceil, int(math.max(0, cool - now)), m}
`)

// releaseScript gives back a slot that a cancelled waiter will not use: the slot is freed for
// the next caller if no later slot was handed out since, and it leaves the grant record.
//
// ARGV 1 slot (µs)   2 the tat the grant set.
var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tat') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'tat', ARGV[1])
end
redis.call('LREM', KEYS[2], 1, ARGV[1])
return 1
`)
