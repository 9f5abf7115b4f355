package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/jobs"
)

// manifestRow is one job of an export: where it came from, what it asked for, what became of it.
// The columns are the same in both formats; a value unknown or not set is null in JSONL and an
// empty cell in CSV.
type manifestRow struct {
	ID   string `json:"id"`
	File string `json:"file"` // the job file the job was loaded from; "" for API jobs
	Line *int   `json:"line"`

	Prompt            string `json:"prompt"`
	InputImage        string `json:"inputImage"`
	AspectRatio       string `json:"aspectRatio"`
	Model             string `json:"model"`
	OutputFormat      string `json:"outputFormat"`
	PromptUpsampling  *bool  `json:"promptUpsampling"`
	SafetyTolerance   *int   `json:"safetyTolerance"`
	EnableTranslation *bool  `json:"enableTranslation"`
	Watermark         string `json:"watermark"`
	UploadCn          *bool  `json:"uploadCn"`

	State       string   `json:"state"`
	Reason      string   `json:"reason"`
	Held        string   `json:"held"` // why the budget holds a queued job
	TaskID      string   `json:"taskId"`
	Archive     string   `json:"archive"`
	SHA256      string   `json:"sha256"`
	Bytes       *int64   `json:"bytes"`
	Submissions int      `json:"submissions"` // paid generate calls
	Credits     *float64 `json:"credits"`     // charged against the batch's budget, else submissions at the configured --price; null when unpriced

	CreatedAt   string `json:"createdAt"`   // loaded
	SubmittedAt string `json:"submittedAt"` // the latest generate call answered
	CompletedAt string `json:"completedAt"` // Kie finished generating
	ArchivedAt  string `json:"archivedAt"`
	Error       string `json:"error"`
}

var manifestColumns = []string{"id", "file", "line", "prompt", "inputImage", "aspectRatio", "model", "outputFormat",
	"promptUpsampling", "safetyTolerance", "enableTranslation", "watermark", "uploadCn",
	"state", "reason", "held", "taskId", "archive", "sha256", "bytes", "submissions", "credits",
	"createdAt", "submittedAt", "completedAt", "archivedAt", "error"}

func (r manifestRow) cells() []string {
	return []string{r.ID, r.File, cell(r.Line), r.Prompt, r.InputImage, r.AspectRatio, r.Model, r.OutputFormat,
		cell(r.PromptUpsampling), cell(r.SafetyTolerance), cell(r.EnableTranslation), r.Watermark, cell(r.UploadCn),
		r.State, r.Reason, r.Held, r.TaskID, r.Archive, r.SHA256, cell(r.Bytes), strconv.Itoa(r.Submissions), cell(r.Credits),
		r.CreatedAt, r.SubmittedAt, r.CompletedAt, r.ArchivedAt, r.Error}
}

func cell[T any](v *T) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(*v)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// rowOf is a job's manifest row; prices are the configured credits per image, by model.
func rowOf(j *jobs.Job, prices map[string]float64) manifestRow {
	s := j.Spec
	r := manifestRow{
		ID: j.ID, File: s.File,
		Prompt: s.Prompt, InputImage: s.InputImage, AspectRatio: s.AspectRatio, Model: s.Model, OutputFormat: s.OutputFormat,
		PromptUpsampling: s.PromptUpsampling, SafetyTolerance: s.SafetyTolerance, EnableTranslation: s.EnableTranslation,
		Watermark: s.Watermark, UploadCn: s.UploadCn,
		State: string(j.State), Reason: string(j.Reason), Held: j.Held, TaskID: j.TaskID, Archive: j.Location, SHA256: j.SHA256,
		Submissions: j.Submissions,
		CreatedAt:   stamp(j.Created), SubmittedAt: stamp(j.SubmittedAt), CompletedAt: stamp(j.CompleteTime), ArchivedAt: stamp(j.ArchivedAt),
		Error: j.Error,
	}
	if s.Line > 0 {
		r.Line = &s.Line
	}
	if j.State == jobs.Archived {
		r.Bytes = &j.Bytes
	}
	model := s.Model
	if model == "" {
		model = jobs.DefaultModel
	}
	if j.Credits > 0 {
		c := j.Credits.Float()
		r.Credits = &c
	} else if p, ok := prices[model]; ok {
		c := p * float64(j.Submissions)
		r.Credits = &c
	}
	return r
}

func newExportCmd() *cobra.Command {
	var format, outPath, into string
	cmd := &cobra.Command{
		Use:   "export BATCH",
		Short: "Write a manifest of a batch: one row per job with its source line, request, state, archive path and sha256",
		Long: `export writes one row per job of BATCH, in load order, as JSONL (default) or CSV, to stdout or
--out FILE (written whole or not at all). The columns, the same in both formats:

  id, file, line          the job and where it came from (the job file and the line it starts on)
  prompt ... uploadCn     the request's fields: prompt, inputImage, aspectRatio, model,
                          outputFormat, promptUpsampling, safetyTolerance, enableTranslation,
                          watermark, uploadCn (empty when the job left Kie's default)
  state, reason           queued, submitted, generated, archived or failed; why it failed
  held                    why the budget holds a queued job (see kontextq budget)
  taskId                  Kie's task id
  archive, sha256, bytes  where the image is, its checksum and size
  submissions, credits    paid generate calls, and what they cost: as charged to the batch's
                          budget, else at the configured --price
  createdAt, submittedAt, completedAt, archivedAt   loaded, submitted, generated (Kie's), archived
  error                   the last error

--into FILE.csv writes instead a copy of the CSV job file the batch was loaded from, every row
with the columns kontextq_id, kontextq_state, kontextq_reason, kontextq_held, kontextq_task_id,
kontextq_archive, kontextq_sha256 and kontextq_error appended (empty for rows that are not jobs of
the batch), so results can be read beside the prompts in a spreadsheet.

It streams, so a batch of any size exports in constant memory (--into keeps one small record per
job in memory). Jobs that ended longer ago than --retention have left the ledger; their sidecars in the
archive are the lasting record, and export says how many are missing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "jsonl" && format != "csv" {
				return usageErr(fmt.Errorf("--format %q: want jsonl or csv", format))
			}
			s, err := openSession(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, batch := cmd.Context(), args[0]
			l, c, err := s.batchLedger(ctx, batch)
			if err != nil {
				return err
			}
			if into != "" {
				n, err := writeTo(outPath, cmd.OutOrStdout(), func(w io.Writer) (int, error) { return writeBack(ctx, l, batch, into, w) })
				if err == nil && int64(n) < c.Total {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d of the batch's %d jobs were loaded from %s and written back\n", n, c.Total, into)
				}
				return err
			}
			n, err := exportTo(ctx, l, batch, format, s.cfg.Prices, outPath, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if missing := c.Total - int64(n); missing > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "exported %d of %d jobs; %d ended more than --retention ago and left the ledger: their sidecars in the archive are the record\n", n, c.Total, missing)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	cmd.Flags().StringVar(&outPath, "out", "", "write to this file instead of stdout")
	cmd.Flags().StringVar(&into, "into", "", "write a copy of this CSV job file with the results appended as columns, instead of the manifest")
	return cmd
}

// exportTo writes the manifest to path or, when path is empty, to stdout. It returns the number of
// rows.
func exportTo(ctx context.Context, l *jobs.Ledger, batch, format string, prices map[string]float64, path string, stdout io.Writer) (int, error) {
	return writeTo(path, stdout, func(w io.Writer) (int, error) { return writeManifest(ctx, l, batch, format, prices, w) })
}

// writeTo runs write on path (through a temporary file renamed at the end, so the file is written
// whole or not at all) or, when path is empty, on stdout. It returns what write returns.
func writeTo(path string, stdout io.Writer, write func(io.Writer) (int, error)) (int, error) {
	if path == "" {
		bw := bufio.NewWriter(stdout)
		n, err := write(bw)
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		return n, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		// The error names the temporary file, which the user never asked for.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, usageErr(fmt.Errorf("--out %s: cannot create a file in %s: %w", path, dir, err))
	}
	defer os.Remove(f.Name()) // after a successful rename, there is nothing to remove
	bw := bufio.NewWriter(f)
	n, err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return n, err
		}
		return n, fmt.Errorf("export to %s: %w", path, err)
	}
	return n, nil
}

func writeManifest(ctx context.Context, l *jobs.Ledger, batch, format string, prices map[string]float64, w io.Writer) (int, error) {
	n := 0
	var write func(manifestRow) error
	var flush func() error
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(manifestColumns); err != nil {
			return 0, err
		}
		write = func(r manifestRow) error { return cw.Write(r.cells()) }
		flush = func() error { cw.Flush(); return cw.Error() }
	default:
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		write = func(r manifestRow) error { return enc.Encode(r) }
		flush = func() error { return nil }
	}
	err := l.Each(ctx, batch, func(j *jobs.Job) error {
		n++
		return write(rowOf(j, prices))
	})
	if err != nil {
		return n, fmt.Errorf("export %s: %w", batch, err)
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("export %s: %w", batch, err)
	}
	return n, nil
}
