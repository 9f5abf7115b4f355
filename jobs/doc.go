// Package jobs is what a kontextq job is and where it is recorded: Spec (Kie's request fields plus
// an id and a batch), validation exactly as Kie checks a request, stable ids derived from a
// request's content, readers for bulk files (JSONL, CSV, plain text), the asynq task types, and
// the ledger — a small Redis record per job plus per-batch counters — that makes every step of the
// pipeline idempotent.
//
// Other Go services import this package, and nothing else, to enqueue work: NewEnqueuer on their
// Redis client, then Enqueue.
package jobs
