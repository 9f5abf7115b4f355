package jobs

import (
	"fmt"
	"strings"
)

// Priority is a job's class when it waits for a submission. A higher class always takes the
// next free token; within a class, batches share the tokens round-robin, one job each in turn,
// so a small batch loaded behind a large one finishes in about its own size in tokens.
type Priority string

const (
	// Interactive is for a person waiting on the result.
	Interactive Priority = "interactive"
	// Normal is the default of the HTTP API and of jobs.Enqueuer: services enqueuing jobs one at
	// a time.
	Normal Priority = "normal"
	// Bulk is the default of file loads (load, run) and of retry.
	Bulk Priority = "bulk"
)

// Priorities are the classes, highest first.
var Priorities = []Priority{Interactive, Normal, Bulk}

// ParsePriority reads a class name; "" is def.
func ParsePriority(s string, def Priority) (Priority, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return def, nil
	}
	for _, p := range Priorities {
		if string(p) == s {
			return p, nil
		}
	}
	names := make([]string, len(Priorities))
	for i, p := range Priorities {
		names[i] = string(p)
	}
	return "", fmt.Errorf("priority %q: want one of %s", s, strings.Join(names, ", "))
}

// valid reports whether p is a known class.
func (p Priority) valid() bool {
	for _, q := range Priorities {
		if p == q {
			return true
		}
	}
	return false
}
