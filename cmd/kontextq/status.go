package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/human"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
)

func newStatusCmd() *cobra.Command {
	var (
		watch, wait bool
		every       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [BATCH]",
		Short: "Show a batch's jobs per state, its pace and ETA (or, without BATCH, every batch)",
		Long: `status shows how far a batch has come: its jobs per state, failures per reason, the pace at which
images are archived, and how long the queued jobs take at the configured --rate. Without BATCH it
lists every batch of the namespace.

--watch refreshes until interrupted (a bar on a terminal, a line per change elsewhere); the pace
shown is then measured over the last minute. --wait returns when the batch has finished, with run's
exit codes: 0 every job archived, 1 some failed (each listed with its reason).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && (watch || wait) {
				return usageErr(errors.New("--watch and --wait need a BATCH"))
			}
			s, err := openSession(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cfg, l := cmd.Context(), s.cfg, s.ledger()
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				return listBatches(ctx, l, out)
			}
			batch := args[0]
			info, err := l.Info(ctx, batch)
			if err != nil {
				return err
			}
			if info.Total == 0 {
				return usageErr(fmt.Errorf("batch %q: not in the ledger of namespace %s (kontextq status lists the batches)", batch, cfg.Namespace))
			}
			if !watch && !wait {
				return printStatus(ctx, l, batch, info, cfg.Rate, time.Now(), out)
			}
			err = followBatch(ctx, l, batch, cfg.Rate, every, wait, out)
			if errors.Is(err, errInterrupted) {
				return &exitError{code: exitFailed, err: err}
			}
			if err != nil || !wait {
				return err
			}
			return summarize(ctx, l, batch, out)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&watch, "watch", false, "refresh until interrupted")
	f.BoolVar(&wait, "wait", false, "return when the batch has finished: exit 0 if every job was archived, 1 if some failed")
	f.DurationVar(&every, "every", 2*time.Second, "refresh interval of --watch and --wait")
	return cmd
}

// listBatches prints one line per batch of the namespace.
func listBatches(ctx context.Context, l *jobs.Ledger, out io.Writer) error {
	names, err := l.Batches(ctx)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fmt.Fprintf(out, "no batches in namespace %s\n", l.Namespace())
		return nil
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tTOTAL\tARCHIVED\tFAILED\tGENERATING\tARCHIVING\tQUEUED\tHELD\tSPENT\tSTATE")
	for _, b := range names {
		c, err := l.Counts(ctx, b)
		if err != nil {
			return err
		}
		bb, err := l.Budget(ctx, b)
		if err != nil {
			return err
		}
		state := "working"
		switch {
		case c.Done():
			state = "finished"
		case c.Stalled():
			state = "stopped by its budget"
		}
		spent := bb.Spent.String()
		switch {
		case bb.Unpriced > 0 && bb.Spent == 0:
			spent = "-" // paid for at prices nobody gave or measured
		case bb.Unpriced > 0:
			spent = ">" + spent
		}
		if bb.HasCap {
			spent += "/" + bb.Cap.String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", b, c.Total, c.Archived, c.Failed, c.Submitted, c.Generated, c.Queued, c.Held, spent, state)
	}
	return tw.Flush()
}

// printStatus prints one batch's counts, failures by reason, pace and ETA.
func printStatus(ctx context.Context, l *jobs.Ledger, batch string, info jobs.BatchInfo, rate ratelimit.Rate, now time.Time, out io.Writer) error {
	c := info.Counts
	state := "working"
	switch {
	case c.Done():
		state = "finished"
	case c.Stalled():
		state = "stopped by its budget"
	}
	fmt.Fprintf(out, "batch %s: %d jobs, %s\n", batch, c.Total, state)
	failures := ""
	if c.Failed > 0 {
		reasons, err := l.FailureReasons(ctx, batch)
		if err != nil {
			return err
		}
		failures = formatReasons(reasons)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  archived\t%d\t\n", c.Archived)
	fmt.Fprintf(tw, "  failed\t%d\t %s\n", c.Failed, failures)
	fmt.Fprintf(tw, "  generating\t%d\t submitted; Kie is working on them\n", c.Submitted)
	fmt.Fprintf(tw, "  archiving\t%d\t generated; being downloaded to the archive\n", c.Generated)
	if c.Held > 0 {
		fmt.Fprintf(tw, "  queued\t%d\t %d waiting for their turn at the rate limit, %d held by the budget\n", c.Queued, c.Queued-c.Held, c.Held)
	} else {
		fmt.Fprintf(tw, "  queued\t%d\t waiting for their turn at the rate limit\n", c.Queued)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines, err := batchBudgetLines(ctx, l, batch)
	if err != nil {
		return err
	}
	for _, line := range lines {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "pace: %s\n", averagePace(info, now))
	if c.Done() {
		return nil
	}
	waiting, err := l.Waiting(ctx)
	if err != nil {
		return err
	}
	sh, inLine := jobs.ShareOf(waiting, batch)
	if inLine {
		fmt.Fprintf(out, "share: %s\n", describeShare(sh))
	}
	fmt.Fprintf(out, "eta: %s\n", jobs.EstimateETA(c, sh, rate))
	return nil
}

// describeShare says what part of the account's submissions a batch gets now, and why.
func describeShare(s jobs.Share) string {
	others := ""
	if s.Batches > 1 {
		others = fmt.Sprintf(", in turn with %d other batches", s.Batches-1)
	}
	if s.Fraction == 0 {
		return fmt.Sprintf("none for now: %d in line (%s%s) after %d jobs of higher priority", s.Waiting, s.Priority, others, s.Higher)
	}
	return fmt.Sprintf("%.0f%% of the submissions: %d in line (%s%s)", 100*s.Fraction, s.Waiting, s.Priority, others)
}

// formatReasons lists counts by reason, largest first.
func formatReasons(m map[jobs.Reason]int) string {
	type rc struct {
		r jobs.Reason
		n int
	}
	var list []rc
	for r, n := range m {
		list = append(list, rc{r, n})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].n != list[j].n {
			return list[i].n > list[j].n
		}
		return list[i].r < list[j].r
	})
	parts := make([]string, len(list))
	for i, x := range list {
		name := string(x.r)
		if name == "" {
			name = "unknown"
		}
		parts[i] = fmt.Sprintf("%d %s", x.n, name)
	}
	return strings.Join(parts, ", ")
}

// averagePace is the archiving pace since the batch's first submission: up to now while it works,
// up to its last job when it has finished.
func averagePace(info jobs.BatchInfo, now time.Time) string {
	if info.FirstSubmitted.IsZero() {
		return "nothing submitted yet"
	}
	end := now
	if info.Done() && !info.LastEnded.IsZero() {
		end = info.LastEnded
	}
	span := end.Sub(info.FirstSubmitted)
	if span < time.Second || info.Archived == 0 {
		return fmt.Sprintf("%d archived since the first submission %s ago", info.Archived, human.Duration(now.Sub(info.FirstSubmitted)))
	}
	return fmt.Sprintf("%s archived/min on average since the first submission, %s ago", perMinute(info.Archived, span), human.Duration(now.Sub(info.FirstSubmitted)))
}

func perMinute(n int64, d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(n)/d.Minutes())
}

// paceWindow remembers recent samples of the archived count, to measure the pace over the last
// minute while watching.
type paceWindow struct {
	span    time.Duration
	samples []paceSample
}

type paceSample struct {
	at       time.Time
	archived int64
}

// add records a sample and returns the pace over the window (archived per minute), or ok false
// while the samples span too little time to say.
func (w *paceWindow) add(at time.Time, archived int64) (perMin float64, ok bool) {
	w.samples = append(w.samples, paceSample{at, archived})
	cut := at.Add(-w.span)
	// Keep one sample at or before the cut, so the window spans the whole minute.
	i := 0
	for i+1 < len(w.samples) && !w.samples[i+1].at.After(cut) {
		i++
	}
	w.samples = slices.Delete(w.samples, 0, i)
	first := w.samples[0]
	d := at.Sub(first.at)
	if d < 5*time.Second {
		return 0, false
	}
	return float64(archived-first.archived) / d.Minutes(), true
}

// errInterrupted ends followBatch when its context ends before the batch has finished.
var errInterrupted = errors.New("interrupted before the batch finished")

// followBatch shows the batch's progress, with its pace over the last minute and how long its
// queued jobs take at rate, every interval. With untilDone it returns nil once the batch has
// finished and errInterrupted if ctx ends first; without, it returns nil when ctx ends.
func followBatch(ctx context.Context, l *jobs.Ledger, batch string, rate ratelimit.Rate, every time.Duration, untilDone bool, out io.Writer) error {
	t := time.NewTicker(max(every, 100*time.Millisecond))
	defer t.Stop()
	view := newBatchView(out)
	defer view.Close()
	pace := paceWindow{span: time.Minute}
	for {
		c, err := l.Counts(ctx, batch)
		if err != nil {
			return err
		}
		extra := ""
		if pm, ok := pace.add(time.Now(), c.Archived); ok {
			extra = fmt.Sprintf("%.1f archived/min", pm)
		}
		if e := jobs.EstimateETA(c, jobs.Share{}, rate); e.Known && e.Queued > 0 {
			extra = strings.TrimPrefix(extra+" · eta ≥ "+human.Duration(e.Submit), " · ")
		}
		view.Show(c, extra)
		// A batch whose every job left is held by the budget goes no further on its own.
		if untilDone && (c.Done() || c.Stalled()) {
			return nil
		}
		select {
		case <-ctx.Done():
			if untilDone {
				return errInterrupted
			}
			return nil
		case <-t.C:
		}
	}
}
