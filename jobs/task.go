package jobs

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Task types. A task's payload names the job only; everything else is in the ledger, so a task
// costs little Redis memory and can never disagree with the ledger.
const (
	TypeSubmit  = "kontextq:submit"
	TypePoll    = "kontextq:poll"
	TypeArchive = "kontextq:archive"
	TypeSweep   = "kontextq:sweep"
)

// Queues are the asynq queue names of one namespace. Archive work outranks polls, which outrank
// submits; submits run on their own server so that submits waiting on the rate limiter never hold
// a slot that polls and archives need. Submits have a queue per priority class, taken strictly in
// order, so a job of a higher class dispatched behind others of a lower one still goes first.
type Queues struct {
	Submit                          string // bulk submits (and every submit of earlier versions)
	SubmitNormal, SubmitInteractive string
	Poll, Archive, Sweep            string
}

// QueuesFor returns the queue names of namespace ns.
func QueuesFor(ns string) Queues {
	return Queues{Submit: ns + ":submit", SubmitNormal: ns + ":submit:normal", SubmitInteractive: ns + ":submit:interactive",
		Poll: ns + ":poll", Archive: ns + ":archive", Sweep: ns + ":sweep"}
}

// SubmitFor is the submit queue of class p.
func (q Queues) SubmitFor(p Priority) string {
	switch p {
	case Interactive:
		return q.SubmitInteractive
	case Normal:
		return q.SubmitNormal
	}
	return q.Submit
}

// SubmitQueues are the submit queues, highest class first.
func (q Queues) SubmitQueues() []string {
	return []string{q.SubmitInteractive, q.SubmitNormal, q.Submit}
}

// Ref names one job: ids are unique within a batch.
type Ref struct {
	Batch string `json:"b"`
	ID    string `json:"i"`
}

func (r Ref) String() string { return r.Batch + "/" + r.ID }

// ParseRef reads "batch/id".
func ParseRef(s string) (Ref, error) {
	b, id, ok := strings.Cut(s, "/")
	if !ok || b == "" || id == "" {
		return Ref{}, fmt.Errorf("job reference %q: want BATCH/ID", s)
	}
	return Ref{Batch: b, ID: id}, nil
}

// Payload is the payload of submit and archive tasks.
type Payload struct {
	Ref
}

// PollPayload is the payload of a poll task. Token identifies the poll chain that scheduled it:
// only the chain whose token the ledger holds schedules the next poll, so callbacks, sweeps and
// redeliveries never multiply the polls of one job. An empty token is a one-off check (from a
// callback or the sweeper) that never schedules a follow-up.
type PollPayload struct {
	Ref
	Token string `json:"t,omitempty"`
}

// EncodePayload marshals a task payload.
func EncodePayload(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("jobs: encoding payload: %v", err)) // payload types are plain structs
	}
	return b
}

// DecodePayload unmarshals a task payload into v and checks it names a job.
func DecodePayload(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding task payload: %w", err)
	}
	var r Ref
	switch p := v.(type) {
	case *Payload:
		r = p.Ref
	case *PollPayload:
		r = p.Ref
	default:
		return nil
	}
	if r.Batch == "" || r.ID == "" {
		return fmt.Errorf("task payload %s names no job", b)
	}
	return nil
}
