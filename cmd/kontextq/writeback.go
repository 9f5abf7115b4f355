package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kontextq/kontextq/jobs"
)

// writebackColumns are appended to each row of the input CSV by export --into: what became of
// the job the row was loaded as.
var writebackColumns = []string{"kontextq_id", "kontextq_state", "kontextq_reason", "kontextq_held", "kontextq_task_id",
	"kontextq_archive", "kontextq_sha256", "kontextq_error"}

// writeBack writes a copy of the CSV job file input to w with writebackColumns appended: the
// header row gets their names, each row loaded as a job its results, and any other row (a bad
// line skipped at load, a row of another batch) empty cells. Rows are matched to jobs by the
// line they start on, so quoted fields spanning lines are matched right. It returns the number
// of rows matched to a job.
func writeBack(ctx context.Context, l *jobs.Ledger, batch, input string, w io.Writer) (int, error) {
	abs, err := filepath.Abs(input)
	if err != nil {
		return 0, err
	}
	byLine := map[int][]string{}
	err = l.Each(ctx, batch, func(j *jobs.Job) error {
		if j.Spec.File == abs && j.Spec.Line > 0 {
			byLine[j.Spec.Line] = []string{j.ID, string(j.State), string(j.Reason), j.Held, j.TaskID, j.Location, j.SHA256, j.Error}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("export %s: %w", batch, err)
	}
	if len(byLine) == 0 {
		return 0, usageErr(fmt.Errorf("--into %s: no job of batch %s was loaded from this file (jobs record the absolute path they were loaded from)", input, batch))
	}
	f, err := os.Open(input)
	if err != nil {
		return 0, usageErr(fmt.Errorf("--into %w", err))
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	cw := csv.NewWriter(w)
	empty := make([]string, len(writebackColumns))
	matched := 0
	for first := true; ; first = false {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return matched, usageErr(fmt.Errorf("--into %s: %w", input, err))
		}
		line, _ := r.FieldPos(0)
		extra, ok := byLine[line]
		switch {
		case ok:
			matched++
		case first:
			extra = writebackColumns
		default:
			extra = empty
		}
		if err := cw.Write(append(rec, extra...)); err != nil {
			return matched, err
		}
	}
	cw.Flush()
	return matched, cw.Error()
}
