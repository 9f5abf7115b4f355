package eventually_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
)

// fakeTB records a failure instead of ending the test, so the helper's own failures can be
// checked.
type fakeTB struct {
	testing.TB
	failed atomic.Pointer[string]
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.failed.Store(&msg)
	panic(f) // stands in for runtime.Goexit
}

func run(f *fakeTB, fn func()) {
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
	}()
	fn()
}

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	start := time.Now()
	eventually.True(t, 10*time.Second, "the third check", func() bool { return n.Add(1) >= 3 })
	if got := n.Load(); got != 3 {
		t.Errorf("checked %d times, want 3", got)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s for three checks", el)
	}
}

func TestTrueFailsAfterTheTimeoutNamingWhatItWaitedFor(t *testing.T) {
	t.Parallel()
	f := &fakeTB{TB: t}
	start := time.Now()
	run(f, func() { eventually.True(f, 200*time.Millisecond, "the moon", func() bool { return false }) })
	msg := f.failed.Load()
	if msg == nil {
		t.Fatal("a condition that never holds did not fail the test")
	}
	if !strings.Contains(*msg, "the moon") || !strings.Contains(*msg, "200ms") {
		t.Errorf("failure %q does not name what was awaited and for how long", *msg)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("gave up after %s, before the 200ms timeout", el)
	}
}

func TestNilReportsTheLastError(t *testing.T) {
	t.Parallel()
	f := &fakeTB{TB: t}
	var n atomic.Int32
	run(f, func() {
		eventually.Nil(f, 150*time.Millisecond, "nothing", func() error { return fmt.Errorf("seen %d", n.Add(1)) })
	})
	msg := f.failed.Load()
	if msg == nil {
		t.Fatal("a check that always fails did not fail the test")
	}
	if want := fmt.Sprintf("seen %d", n.Load()); !strings.Contains(*msg, want) {
		t.Errorf("failure %q does not carry the last error %q", *msg, want)
	}
	var ok atomic.Bool
	eventually.Nil(t, 10*time.Second, "the second check", func() error {
		if ok.Swap(true) {
			return nil
		}
		return errors.New("first")
	})
}
