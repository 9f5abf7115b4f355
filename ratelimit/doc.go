// Package ratelimit paces calls to an API that enforces a strict sliding window ("20 per 10 s,
// over it a 429 and the call is dropped"), sharing one budget between every process of an
// account through Redis, and adapting when the API says the budget is smaller than configured.
//
// # The bucket shape
//
// A token bucket with burst b at the configured rate admits b-1 calls too many in some window
// (burst 20 at 20/10s admits 40 in a closed 10 s window), and paying for a burst with a slower
// rate costs more throughput than it saves. The limiter therefore uses burst 1 and spaces grants
// at least Per*(1+Margin)/Events apart. Any closed window of length Per then holds at most
// floor(Events/(1+Margin))+1 <= Events grants whenever Margin > 0: the strict window cannot be
// exceeded by construction, and the 21st call of a run is Per*Margin (200 ms at the default 2%)
// away from the window's edge, which absorbs jitter between the grant and the call's arrival at
// the API. The cost is Margin/(1+Margin) of the throughput: 98% of 20/10s at the default (the
// tests measure 99.2%, 98.2% and 95.3% for margins of 1, 2 and 5%). Shape gives the same shape
// as golang.org/x/time/rate parameters.
//
// # Sharing
//
// The authoritative decision is a Lua script run in Redis on Redis TIME, so worker clocks never
// matter, in the manner of go-redis/redis_rate: one EVALSHA per attempt returns a Result that
// either grants a slot or says how long until one is free, and the caller decides. Each process
// keeps a local x/time/rate bucket at the account's current rate and the last free slot Redis
// told it of; an attempt those say is certain to fail is denied without asking Redis, so a
// single process makes one round trip per token however often it asks. Allow never reserves:
// two processes asking at the same instant cost one denial. Wait and WaitAtMost may be handed a
// slot a little ahead (at most one per process at a time, within Options.MaxReserve), so
// processes that contend are served in turn with one round trip per token. A Redis error denies
// (fail closed) and is returned: an unreachable Redis never becomes a burst.
//
// # Adapting to 429s
//
// Throttled reports a 429. It starts a cool-down for every process of the account (one window,
// or the Retry-After if longer), cuts the shared rate multiplicatively, and treats the window
// before the 429 as a measurement: the grants of that window, less one for each refused call
// reported during the cool-down, are what the API accepted, which for a strict window is its
// true limit. When that count is clearly below the current ceiling (under 90%), it becomes the
// learned ceiling, kept in Redis: a process told 60/10s against a true 20/10s learns 20 from its
// first 429 and stays below the limit from the next window on, instead of probing into it again
// as plain AIMD would. A count close to the ceiling is jitter or a transient and only cuts the
// rate down to what was accepted. After the cool-down the rate climbs back additively (10% of the
// ceiling per window) to the learned ceiling or, without one, the configured rate.
//
// A lone 429 after a window the account filled to its ceiling is jitter, not news: calls spaced
// to fit reached the API bunched (one was delayed on its way by more than the margin), so the
// window frees up as its oldest call leaves it, about one slot later. Such a 429 cools down for
// one slot instead of a window; a second 429 within a window of it cools down for the whole
// window as usual. On a loaded machine, where a call can arrive tens of milliseconds late, this
// is the difference between losing a slot and losing a window's worth of calls.
//
// A 429 after a window in which nothing was accepted measures nothing: the API is refusing
// everything (a storm, an outage). Such a 429 halves the rate, teaches no ceiling, and undoes the
// ceiling learned at the start of the storm, so a storm never lowers the ceiling below the true
// limit; once it passes, the rate climbs back to the configured rate. A learned ceiling is
// trusted for Options.ProbeAfter without a new 429 and then forgotten, which is how the limiter
// probes above it again, rarely. Refusals that say nothing about the rate (maintenance, no
// credits) are not the limiter's: the worker pauses the account for them.
//
// In the package's simulation against a strict 20/10s window with 250-400 ms round trips, told
// the truth it uses 98% of the limit with no 429; told 60/10s it uses 97% with two 429s, none
// after the first window; and after a one-minute storm it is back at 98% within two minutes.
//
// Every process of an account must be configured with the same Rate and Margin.
package ratelimit
