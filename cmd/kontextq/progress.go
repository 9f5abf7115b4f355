package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// batchView shows a batch's progress: on a terminal one line redrawn in place, a bar of archived
// of total and the counts; anywhere else one plain line per change.
type batchView struct {
	out   io.Writer
	tty   bool
	width func() int // the terminal's columns
	start time.Time
	last  jobs.Counts
	first bool
	drawn bool
}

func newBatchView(out io.Writer) *batchView {
	v := &batchView{out: out, tty: isTerminal(out), start: time.Now(), first: true}
	v.width = func() int { return terminalWidth(out) }
	return v
}

// Show displays c, with extra (rate, ETA) when given.
func (v *batchView) Show(c jobs.Counts, extra string) {
	line := progressLine(c)
	if extra != "" {
		line += " · " + extra
	}
	if !v.tty {
		if v.first || c != v.last {
			fmt.Fprintf(v.out, "%s  %s\n", time.Since(v.start).Round(time.Second), line)
		}
		v.first, v.last = false, c
		return
	}
	// Back to the start of the line, the new text, then erase what is left of the old one.
	fmt.Fprintf(v.out, "\r%s\x1b[K", fitLine(c.Archived, c.Total, line, v.width()))
	v.first, v.last, v.drawn = false, c, true
}

// Close ends the line being redrawn so that what follows starts on a new one.
func (v *batchView) Close() {
	if v.drawn {
		fmt.Fprintln(v.out)
		v.drawn = false
	}
}

// The bar's width in cells: up to maxBar, and left out when fewer than minBar fit.
const (
	maxBar = 20
	minBar = 8
)

// fitLine is the redrawn line: a bar of done of total, then text, cut to width-1 columns. A line
// as wide as the terminal or wider would wrap, and \r returns only to the start of its last row,
// leaving a trail of copies; the bar narrows, then goes, when there is no room for it.
func fitLine(done, total int64, text string, width int) string {
	room := width - 1
	if room < 1 {
		room = 1
	}
	n := utf8.RuneCountInString(text)
	if bar := min(maxBar, room-n-3); bar >= minBar {
		filled := 0
		if total > 0 {
			filled = int(min(done, total) * int64(bar) / total)
		}
		text = "[" + strings.Repeat("█", filled) + strings.Repeat("░", bar-filled) + "] " + text
		n += bar + 3
	}
	if n <= room {
		return text
	}
	r := []rune(text)
	if room == 1 {
		return string(r[:1])
	}
	return string(r[:room-1]) + "…"
}

// terminalWidth is the number of columns of the terminal w writes to, 80 when it cannot tell.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return 80
}
