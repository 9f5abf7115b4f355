package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/kontextq/kontextq/jobs"
)

// Progress is drawn as a bar on a terminal and written as plain lines anywhere else (a log file,
// a CI job, a pipe), where a redrawn bar would be a mess of control characters.

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// counter shows a count growing towards a known total. It is safe for concurrent use.
type counter struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar // on a terminal
	out   io.Writer
	what  string
	total int64
	every time.Duration
	start time.Time
	last  time.Time
	n     int64
	shown int64 // the count of the last plain line
	now   func() time.Time
}

// newCounter returns a counter of what (e.g. "enqueued") up to total, writing to out; plain lines
// come at most every interval, and once at the end.
func newCounter(out io.Writer, what string, total int64, every time.Duration) *counter {
	c := &counter{out: out, what: what, total: total, every: every, now: time.Now, shown: -1}
	c.start = c.now()
	c.last = c.start
	if isTerminal(out) {
		c.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
		)
	}
	return c
}

// Set records that n of total are done.
func (c *counter) Set(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= c.n {
		return
	}
	c.n = n
	if c.bar != nil {
		_ = c.bar.Set64(n)
		return
	}
	if now := c.now(); now.Sub(c.last) >= c.every {
		c.last = now
		c.line(now)
	}
}

// Finish completes the display.
func (c *counter) Finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bar != nil {
		if !c.bar.IsFinished() {
			_ = c.bar.Exit()
			fmt.Fprintln(c.out)
		}
		return
	}
	if c.shown != c.n {
		c.line(c.now())
	}
}

func (c *counter) line(now time.Time) {
	c.shown = c.n
	pct := 0.0
	if c.total > 0 {
		pct = 100 * float64(c.n) / float64(c.total)
	}
	fmt.Fprintf(c.out, "%s %d/%d (%.0f%%) in %s\n", c.what, c.n, c.total, pct, now.Sub(c.start).Round(time.Second))
}

// batchView shows a batch's progress: archived of total on a bar, or one plain line per change.
type batchView struct {
	out   io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	last  jobs.Counts
	first bool
}

func newBatchView(out io.Writer) *batchView {
	return &batchView{out: out, start: time.Now(), first: true}
}

// Show displays c, with extra (rate, ETA) when given.
func (v *batchView) Show(c jobs.Counts, extra string) {
	line := progressLine(c)
	if extra != "" {
		line += " · " + extra
	}
	if !isTerminal(v.out) {
		if v.first || c != v.last {
			fmt.Fprintf(v.out, "%s  %s\n", time.Since(v.start).Round(time.Second), line)
		}
		v.first, v.last = false, c
		return
	}
	if v.bar == nil {
		v.bar = progressbar.NewOptions64(max(c.Total, 1),
			progressbar.OptionSetWriter(v.out),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	if c.Total != v.bar.GetMax64() && c.Total > 0 {
		v.bar.ChangeMax64(c.Total)
	}
	v.bar.Describe(line)
	_ = v.bar.Set64(c.Archived)
	v.first, v.last = false, c
}

// Close ends the bar's line so that what follows starts on a new one.
func (v *batchView) Close() {
	if v.bar != nil {
		_ = v.bar.Exit()
		fmt.Fprintln(v.out)
	}
}
