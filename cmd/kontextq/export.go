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

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/jobs"
)

// manifestRow is one job of an export. The columns are the same in both formats.
type manifestRow struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	TaskID  string `json:"taskId"`
	Archive string `json:"archive"`
	SHA256  string `json:"sha256"`
	Error   string `json:"error"`
}

var manifestColumns = []string{"id", "state", "reason", "taskId", "archive", "sha256", "error"}

func (r manifestRow) cells() []string {
	return []string{r.ID, r.State, r.Reason, r.TaskID, r.Archive, r.SHA256, r.Error}
}

func rowOf(j *jobs.Job) manifestRow {
	return manifestRow{ID: j.ID, State: string(j.State), Reason: string(j.Reason), TaskID: j.TaskID,
		Archive: j.Location, SHA256: j.SHA256, Error: j.Error}
}

func newExportCmd() *cobra.Command {
	var format, outPath string
	cmd := &cobra.Command{
		Use:   "export BATCH",
		Short: "Write a manifest of a batch: one row per job with its state, Kie task id, archive path, sha256 and error",
		Long: `export writes one row per job of BATCH, in load order: id, state, reason (of a failure), taskId
(Kie's), archive (where the image is), sha256 and error, as JSONL (default) or CSV, to stdout or
--out FILE (written whole or not at all). It streams, so a batch of any size exports in constant
memory. Jobs that ended longer ago than --retention have left the ledger; their sidecars in the
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
			n, err := exportTo(ctx, l, batch, format, outPath, cmd.OutOrStdout())
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
	return cmd
}

// exportTo writes the manifest to path (through a temporary file renamed at the end) or, when path
// is empty, to stdout. It returns the number of rows.
func exportTo(ctx context.Context, l *jobs.Ledger, batch, format, path string, stdout io.Writer) (int, error) {
	if path == "" {
		bw := bufio.NewWriter(stdout)
		n, err := writeManifest(ctx, l, batch, format, bw)
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
	n, err := writeManifest(ctx, l, batch, format, bw)
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
		return n, fmt.Errorf("export to %s: %w", path, err)
	}
	return n, nil
}

func writeManifest(ctx context.Context, l *jobs.Ledger, batch, format string, w io.Writer) (int, error) {
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
		return write(rowOf(j))
	})
	if err != nil {
		return n, fmt.Errorf("export %s: %w", batch, err)
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("export %s: %w", batch, err)
	}
	return n, nil
}
