// Package bench measures how close kontextq's real pipeline comes to a strict rate limit, and
// how a naive client does against the same limit in the same run.
//
// Each case starts a Kie simulator in-process with a strict sliding window compressed in time
// (20 per 2 s by default instead of Kie's 20 per 10 s; the poll budget and the naive client's
// sleeps are compressed by the same factor), enqueues a batch with jobs.Enqueuer on a fresh
// namespace of a real Redis, and works it with one or more worker.Worker instances. Each
// instance stands for one worker process: it has its own Kie client, its own ratelimit.Limiter
// instances and its own asynq servers, and shares only Redis and the account with the others,
// exactly as separate processes would. The case ends when the ledger says every job is archived
// or failed; every key of the namespace is then deleted (never FLUSHDB).
//
// The figures come from the simulator, not from kontextq: the creation times of the tasks it
// accepted (for utilisation), its answer counts (for 429s per 100 accepted), and the arrival
// time of every generate answer, recorded by a middleware in front of it (for 429s after the
// first windows). See Figures for the exact definitions.
//
// The naive baseline is what a quick script would do: a fixed number of goroutines calling the
// Kie client directly, each submitting a job, sleeping 10 s (compressed) after a 429 and trying
// again, polling every 3 s (compressed) until the task ends, and downloading the image. It uses
// no Redis and no limiter.
package bench
