package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kontextq/kontextq/internal/pool"
	"github.com/kontextq/kontextq/jobs"
)

// --check-inputs: before anything is enqueued, every job's inputImage URL is asked whether it
// serves an image (jobs.InputChecker: HEAD, else the first bytes), inputCheckers at a time, so
// that a batch of edits does not pay for tasks Kie fails because it cannot fetch their input.
// Local files need no pass of their own: the reader checks each one as it reads the line.

// inputCheckers is how many URLs are checked at once: enough to hide the latency of a remote
// host, few enough not to look like an attack on it.
const inputCheckers = 8

// maxRemembered bounds how many URLs' results are remembered, so a file naming the same input
// on many lines asks once, while a file of a million distinct URLs does not hold them all.
const maxRemembered = 10_000

// checkInputs reads the file and checks every inputImage URL of its good lines, showing the
// progress on errOut. It returns the lines that would fail, in line order, each as
// FILE:LINE: inputImage: reason.
func checkInputs(ctx context.Context, o loadOptions, total int, errOut io.Writer) ([]*jobs.LineError, error) {
	checker := &jobs.InputChecker{Timeout: o.InputTimeout}
	memo := newInputMemo(func(u string) error { return checker.Check(ctx, u) })
	var (
		mu    sync.Mutex
		fails []*jobs.LineError
		done  atomic.Int64
	)
	ctr := newCounter(errOut, "inputs checked", int64(total), 5*time.Second)
	var readErr error
	edits := func(yield func(jobs.Item) bool) {
		r, c, err := openReader(o)
		if err != nil {
			readErr = err
			return
		}
		defer c.Close()
		for {
			it, err := r.Next()
			var le *jobs.LineError
			switch {
			case errors.Is(err, io.EOF):
				return
			case errors.As(err, &le):
				continue // reported by the validation pass
			case err != nil:
				readErr = err
				return
			case !strings.Contains(it.Spec.InputImage, "://"):
				ctr.Set(done.Add(1)) // a generation, or a local file the reader checked
			case !yield(it):
				return
			}
		}
	}
	err := pool.Each(ctx, inputCheckers, edits, func(_ context.Context, it jobs.Item) error {
		if err := memo.check(it.Spec.InputImage); err != nil {
			spec := it.Spec
			spec.Batch = ""
			raw, _ := json.Marshal(spec) // the job as a line to fix and load again
			le := &jobs.LineError{File: o.name(), Line: it.Line, Field: "inputImage", Msg: err.Error(), Raw: string(raw), Err: err}
			mu.Lock()
			fails = append(fails, le)
			mu.Unlock()
		}
		ctr.Set(done.Add(1))
		return nil
	})
	ctr.Finish()
	if ctx.Err() != nil {
		return nil, &exitError{code: exitFailed, err: errors.New("interrupted while checking the inputs; nothing was enqueued")}
	}
	if err == nil {
		err = readErr
	}
	if err != nil {
		return nil, usageErr(err)
	}
	sort.Slice(fails, func(i, j int) bool { return fails[i].Line < fails[j].Line })
	return fails, nil
}

// inputMemo checks each URL once while it remembers it, even when several lines ask at once.
type inputMemo struct {
	check1 func(string) error
	mu     sync.Mutex
	seen   map[string]*inputResult
}

type inputResult struct {
	done chan struct{}
	err  error
}

func newInputMemo(check func(string) error) *inputMemo {
	return &inputMemo{check1: check, seen: map[string]*inputResult{}}
}

func (m *inputMemo) check(u string) error {
	m.mu.Lock()
	if r, ok := m.seen[u]; ok {
		m.mu.Unlock()
		<-r.done
		return r.err
	}
	r := &inputResult{done: make(chan struct{})}
	if len(m.seen) < maxRemembered {
		m.seen[u] = r
	}
	m.mu.Unlock()
	r.err = m.check1(u)
	close(r.done)
	return r.err
}
