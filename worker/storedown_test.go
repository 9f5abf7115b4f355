package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/archive/archivetest"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/worker"
)

// fullDisk is a store on a full disk: reads work, every write fails with ENOSPC.
type fullDisk struct {
	archive.Store
	full atomic.Bool
}

func (f *fullDisk) Put(ctx context.Context, key string, r io.Reader, want archive.Info) error {
	if f.full.Load() {
		return fmt.Errorf("archive put %s: write: %w", key, syscall.ENOSPC)
	}
	return f.Store.Put(ctx, key, r, want)
}

// While the archive store fails (a full disk, a bucket that is down) generated jobs wait, none is
// marked archived, and they all complete once the store is back.
func TestArchiveStoreOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("holds the archive store down for seconds mid-batch")
	}
	t.Parallel()
	cases := []struct {
		name string
		// wrap makes the store and returns the switch that takes it down (true) and back (false).
		wrap func(archive.Store) (archive.Store, func(down bool))
		want string // in the error the ledger keeps for a waiting job
	}{
		{
			name: "disk full",
			wrap: func(s archive.Store) (archive.Store, func(bool)) {
				f := &fullDisk{Store: s}
				return f, f.full.Store
			},
			want: "no space left on device",
		},
		{
			name: "store down",
			wrap: func(s archive.Store) (archive.Store, func(bool)) {
				f := &archivetest.Flaky{Store: s}
				return f, func(down bool) {
					if down {
						f.SetDown(errors.New("connect: connection refused"))
					} else {
						f.SetDown(nil)
					}
				}
			},
			want: "connection refused",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 20
			var setDown func(bool)
			sim := calmSim()
			sim.GenTimeMedian, sim.GenTimeSigma = 1500*time.Millisecond, -1 // none is done before the outage starts
			b := setup(t, setupOpts{
				sim:    sim,
				worker: worker.Options{SweepInterval: time.Second},
				wrapStore: func(s archive.Store) archive.Store {
					w, down := tc.wrap(s)
					setDown = down
					return w
				},
			})
			for i := range n {
				b.enqueue(t, jobs.Spec{Batch: "outage", Prompt: fmt.Sprintf("a barn in fog, %d", i)})
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- b.w.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()

			counts := func() jobs.Counts {
				c, err := b.ledger.Counts(context.Background(), "outage")
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			until := func(what string, timeout time.Duration, cond func(jobs.Counts) bool, during func(jobs.Counts)) {
				t.Helper()
				eventually.Nil(t, timeout, what, func() error {
					c := counts()
					if cond(c) {
						return nil
					}
					if during != nil {
						during(c)
					}
					return fmt.Errorf("counts %+v", c)
				})
			}
			until("every job submitted", 20*time.Second, func(c jobs.Counts) bool { return c.Queued == 0 }, nil)
			setDown(true)
			if c := counts(); c.Archived != 0 {
				t.Fatalf("%d jobs were archived before the outage began; the test proves nothing", c.Archived)
			}
			nothingArchived := func(c jobs.Counts) {
				if c.Archived != 0 {
					t.Fatalf("%d jobs marked archived while the store was failing", c.Archived)
				}
			}
			until("every job generated", 20*time.Second, func(c jobs.Counts) bool { return c.Generated == n }, nothingArchived)
			outageEnds := time.Now().Add(3 * time.Second) // a few failed attempts of each archive
			until("the outage", 10*time.Second, func(jobs.Counts) bool { return time.Now().After(outageEnds) }, nothingArchived)
			waiting := 0
			_ = b.ledger.Each(context.Background(), "outage", func(j *jobs.Job) error {
				if j.State == jobs.Generated && strings.Contains(j.Error, tc.want) {
					waiting++
				}
				return nil
			})
			if waiting == 0 {
				t.Errorf("no generated job records an archive attempt that failed with %q", tc.want)
			}
			setDown(false)
			until("every job archived after the store came back", 30*time.Second, func(c jobs.Counts) bool { return c.Done() }, nil)
			if c := counts(); c.Archived != n {
				t.Errorf("counts %+v, want all %d archived", c, n)
			}
			if got := b.checkArchive(t, "outage"); got != n {
				t.Errorf("%d archived files check out, want %d", got, n)
			}
		})
	}
}
