// Package pool runs a bounded number of goroutines over a stream of work items and stops at the
// first error: the shape shared by the loader, the HTTP API's enqueue and cancel's task removal.
package pool

import (
	"context"
	"iter"
	"sync"
)

// Each calls fn for every item of items on at most workers goroutines (at least one). items is
// read on the calling goroutine, one item ahead of the workers, so a stream of any length is
// never held in memory.
//
// The first error fn returns cancels the context every fn gets and stops the feed: items not yet
// handed out are never read, and fn calls under way finish. Each returns that first error; else
// ctx's error if ctx ended before every item was handed out; else nil.
func Each[T any](ctx context.Context, workers int, items iter.Seq[T], fn func(context.Context, T) error) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var first error
	work := make(chan T)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for it := range work {
				if cctx.Err() != nil {
					continue // drained after a failure; the feed stops on its own
				}
				if err := fn(cctx, it); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
	complete := true
	for it := range items {
		select {
		case work <- it:
			continue
		case <-cctx.Done():
		}
		complete = false
		break
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	if !complete {
		return ctx.Err()
	}
	return nil
}
