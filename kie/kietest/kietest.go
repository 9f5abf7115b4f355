// Package kietest holds test helpers around the Kie simulator (package kiesim): a simulator
// started for one test and stopped when it ends.
package kietest

import (
	"testing"

	"github.com/kontextq/kontextq/kie/kiesim"
)

// NewServer starts a simulator configured by o; it is closed when the test ends.
func NewServer(tb testing.TB, o kiesim.Options) *kiesim.Server {
	tb.Helper()
	s, err := kiesim.Start(o)
	if err != nil {
		tb.Fatalf("kietest: starting the simulator: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}
