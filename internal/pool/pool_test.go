package pool

import (
	"context"
	"errors"
	"iter"
	"sync/atomic"
	"testing"
	"time"
)

func count(n int, read *atomic.Int64) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			read.Add(1)
			if !yield(i) {
				return
			}
		}
	}
}

func TestEachRunsEveryItemWithinTheBound(t *testing.T) {
	var read, sum, running, peak atomic.Int64
	err := Each(context.Background(), 4, count(200, &read), func(_ context.Context, i int) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
		sum.Add(int64(i))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Load() != 199*200/2 {
		t.Errorf("sum of items handled = %d, want %d: some item was skipped or handled twice", sum.Load(), 199*200/2)
	}
	if peak.Load() > 4 || peak.Load() < 2 {
		t.Errorf("%d items at once, want 2 to 4 (the bound)", peak.Load())
	}
}

func TestEachStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	var read, handled atomic.Int64
	err := Each(context.Background(), 3, count(100000, &read), func(ctx context.Context, i int) error {
		handled.Add(1)
		if i == 10 {
			return boom
		}
		if i > 10 {
			<-ctx.Done() // the failure cancels the others
			return ctx.Err()
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the first one (boom)", err)
	}
	if read.Load() > 20 {
		t.Errorf("%d items read after the failure at item 10; the feed should stop", read.Load())
	}
}

func TestEachReportsACancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var read atomic.Int64
	err := Each(ctx, 2, count(100000, &read), func(_ context.Context, i int) error {
		if i == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if read.Load() > 20 {
		t.Errorf("%d items read after the cancel; the feed should stop", read.Load())
	}
}
