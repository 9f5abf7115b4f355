// Package ratelimit paces calls to an API that enforces a strict sliding window ("20 per 10 s,
// over it a 429 and the call is dropped"), sharing one budget between every process of an
// account through Redis, and adapting when the API says the budget is smaller than configured.
//
// # The window
//
// The limiter models the API's window exactly: a shared log of grant times, and a grant only
// when it keeps every window within the limit. An idle account therefore gets its whole window
// at once (20 calls at 20/10s, from any of its processes), and from then on a call is granted
// as soon as the oldest call of the window has left it. A token bucket cannot do this: with
// burst b at the rate it admits b-1 calls too many in some window, and with burst 1 it spends
// the first window at half speed.
//
// A call reaches the API some time after its grant, and not always the same time: a grant
// counts as arriving up to Per*Margin after it was given (200 ms of 10 s at the default 2%), so
// the limiter keeps every closed window of Per*(1+Margin) within the limit. A call granted as an
// older one leaves that window then never arrives while the older is still in the API's window,
// unless the older was delayed by more than the margin. The margin is a fraction of the window,
// so it holds at every time scale; it costs Margin/(1+Margin) of the throughput. When calls do
// arrive later than that (a 429 after a window filled to the ceiling), the account's margin
// doubles, up to five times the configured one, and the extra halves every ten windows without
// such a 429: a loaded machine or a jittery network pays for a wider margin only while it lasts.
//
// # Sharing
//
// The authoritative decision is a Lua script run in Redis on Redis TIME, so worker clocks never
// matter: one EVALSHA per attempt either grants a slot or says how long until one is free. Each
// process keeps the earliest free slot Redis last told it of (with a grant, when the next one
// could fit; with a denial, when the slot asked for frees up); an attempt before it is certain
// to fail and is denied without asking Redis, so a single process makes one round trip per
// token however often it asks. Wait and WaitAtMost may be handed a slot a little ahead (at most
// one per process at a time, within Options.MaxReserve), so processes that contend are served in
// turn with about one round trip per token. Slots that Redis said are free now are taken by a
// process's waiters at once, side by side, so an idle window goes out together; when several
// processes go for the same free slots, the ones that come second are denied. A Redis error denies (fail closed) and is returned: an
// unreachable Redis never becomes a burst.
//
// # Adapting to 429s
//
// Throttled reports a 429. The refused call leaves the log (the API did not count it). It starts
// a cool-down for every process of the account (one window, or the Retry-After if longer), cuts
// the shared rate multiplicatively, and treats the window before the 429 as a measurement: the
// grants of that window, less one for each refused call reported during the cool-down, are what
// the API accepted, which for a strict window is its true limit. When that count is clearly
// below the current ceiling (under 90%), it becomes the learned ceiling, kept in Redis: a
// process told 60/10s against a true 20/10s learns 20 from its first window's 429s and stays
// below the limit from the next window on, instead of probing into it again as plain AIMD would.
// A count close to the ceiling is jitter or a transient and only cuts the rate down to what was
// accepted. After the cool-down the rate climbs back additively (10% of the ceiling per window)
// to the learned ceiling or, without one, the configured rate. The rate sets how many grants a
// window may hold: the rate times Per*(1+Margin).
//
// A lone 429 after a window the account filled to its ceiling is jitter, not news: calls that
// fit reached the API bunched (one was delayed on its way by more than the margin), so the
// window frees up as its oldest call leaves it, about one slot later. Such a 429 cools down for
// one slot instead of a window and teaches nothing; a second 429 within a window of it cools
// down for the whole window as usual, and so do further 429s of the same window that take it
// clearly below the ceiling (more calls refused than jitter explains: the window was over the
// limit).
//
// A 429 after a window in which nothing was accepted measures nothing: the API is refusing
// everything (a storm, an outage). Such a 429 halves the rate, teaches no ceiling, and undoes the
// ceiling learned at the start of the storm, so a storm never lowers the ceiling below the true
// limit; once it passes, the rate climbs back to the configured rate. A learned ceiling is
// trusted for Options.ProbeAfter without a new 429 and then forgotten, which is how the limiter
// probes above it again, rarely. Refusals that say nothing about the rate (maintenance, no
// credits) are not the limiter's: the worker pauses the account for them.
//
// The package's tests drive the limiter against a strict window with hostile callers and
// simulated round trips; docs/benchmarks.md has what it achieves on the real pipeline.
//
// Every process of an account must be configured with the same Rate and Margin, and run a
// version that keeps the same log.
package ratelimit
