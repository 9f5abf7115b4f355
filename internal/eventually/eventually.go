// Package eventually waits in tests for a condition that something running in the background
// will make true: a batch finishing, a page showing a line, a server answering.
package eventually

import (
	"testing"
	"time"
)

// Interval is how often a condition is checked.
const Interval = 50 * time.Millisecond

// True checks cond every Interval until it holds, failing tb after timeout with what it waited
// for.
func True(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Nil(tb, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// Nil checks check every Interval until it returns nil, failing tb after timeout with what it
// waited for and check's last error, which should say what was seen instead.
func Nil(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				tb.Fatalf("waited %s for %s", timeout, what)
			}
			tb.Fatalf("waited %s for %s: %v", timeout, what, err)
		}
		time.Sleep(Interval)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
