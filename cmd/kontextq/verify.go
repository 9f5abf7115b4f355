package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/worker"
)

func newVerifyCmd() *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify BATCH",
		Short: "Re-read every archived image of a batch and check it against its sidecar and the ledger",
		Long: `verify re-reads every image of BATCH in the archive and checks that its sha256 matches its sidecar
and, while the Redis ledger still holds the job, the ledger. Jobs are found both in the ledger and
through the sidecars in the archive, so batches the ledger has forgotten are verified too.

Every missing or corrupt image is listed; the exit code is 0 when all are intact, 1 otherwise.
--repair downloads those again from Kie while their result has not expired, and republishes
them with their sidecars; the ones past expiry are reported as "expired, cannot repair".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if repair {
				if err := cfg.RequireKieKey(); err != nil {
					return usageErr(fmt.Errorf("--repair downloads from Kie: %w", err))
				}
			}
			batch := args[0]
			if err := validBatch(batch); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			rdb, err := openRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			store, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			ledger := jobs.NewLedger(rdb, jobs.LedgerOptions{Namespace: cfg.Namespace})
			out := cmd.OutOrStdout()

			rep, err := verifyBatch(ctx, ledger, store, batch)
			if err != nil {
				return err
			}
			if rep.Checked == 0 {
				return &exitError{code: exitFailed, err: fmt.Errorf("batch %s: nothing archived (no archived job in the ledger, no sidecar in %s)", batch, store.Location(batch))}
			}
			var fixer *worker.Worker
			if repair && len(rep.Findings) > 0 {
				w, _, err := newWorker(ctx, cfg, rdb, newLogger(cfg, cmd.ErrOrStderr()), store)
				if err != nil {
					return err
				}
				defer w.Close()
				fixer = w
			}
			left := 0
			for _, f := range rep.Findings {
				fmt.Fprintf(out, "%-8s %s  %s: %s\n", f.Problem, f.ID, f.Key, f.Detail)
				if fixer == nil {
					left++
					continue
				}
				if why := f.unrepairable(time.Now()); why != "" {
					fmt.Fprintf(out, "         %s  %s\n", f.ID, why)
					left++
					continue
				}
				sc, err := fixer.Rearchive(ctx, f.sidecar)
				if err != nil {
					if errors.Is(err, worker.ErrResultGone) {
						fmt.Fprintf(out, "         %s  expired, cannot repair: %v\n", f.ID, err)
					} else {
						fmt.Fprintf(out, "         %s  repair failed: %v\n", f.ID, err)
					}
					left++
					continue
				}
				fmt.Fprintf(out, "repaired %s  %s (sha256 %s)\n", f.ID, archive.ImageKey(batch, f.ID, sc.Format), sc.SHA256)
			}
			fmt.Fprintf(out, "batch %s: %d images verified, %d intact, %d with problems", batch, rep.Checked, rep.Checked-rep.bad(), rep.bad())
			if fixer != nil {
				fmt.Fprintf(out, ", %d repaired", len(rep.Findings)-left)
			}
			fmt.Fprintln(out)
			if left > 0 {
				return &exitError{code: exitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "download missing and corrupt images again while their results have not expired")
	return cmd
}

// finding is one problem verify found with one job's archive.
type finding struct {
	ID      string
	Key     string // the object at fault
	Problem string // missing, corrupt, sidecar, origin
	Detail  string

	sidecar   archive.Sidecar // what to download again, and from where
	expiresAt time.Time
	origin    bool // the origin image, which lives 10 minutes: never repairable
}

// unrepairable says why f cannot be repaired, "" when it can.
func (f finding) unrepairable(now time.Time) string {
	switch {
	case f.origin:
		return "cannot repair: Kie keeps originImageUrl only 10 minutes"
	case f.sidecar.SourceURL == "":
		return "cannot repair: no result URL is known"
	case f.expiresAt.IsZero() || !now.Before(f.expiresAt):
		return fmt.Sprintf("expired, cannot repair (result expired %s)", f.expiresAt.UTC().Format(time.RFC3339))
	}
	return ""
}

type verifyReport struct {
	Checked  int // jobs whose image was checked
	Findings []finding
}

// bad counts the jobs with at least one finding.
func (r verifyReport) bad() int {
	ids := map[string]bool{}
	for _, f := range r.Findings {
		ids[f.ID] = true
	}
	return len(ids)
}

// verifyBatch checks every archived job of batch: those the ledger holds as archived and those
// whose sidecar is in the store, so that jobs the ledger forgot are checked too.
func verifyBatch(ctx context.Context, l *jobs.Ledger, store archive.Store, batch string) (verifyReport, error) {
	var rep verifyReport
	archived := map[string]*jobs.Job{}
	if err := l.Each(ctx, batch, func(j *jobs.Job) error {
		if j.State == jobs.Archived {
			archived[j.ID] = j
		}
		return nil
	}); err != nil {
		return rep, err
	}
	sidecars := map[string]bool{}
	err := store.List(ctx, batch+"/", func(key string, _ archive.Info) error {
		name := strings.TrimPrefix(key, batch+"/")
		if !strings.Contains(name, "/") && path.Ext(name) == ".json" {
			sidecars[strings.TrimSuffix(name, ".json")] = true
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("listing the archive of %s: %w", batch, err)
	}
	ids := make([]string, 0, len(archived)+len(sidecars))
	for id := range archived {
		ids = append(ids, id)
	}
	for id := range sidecars {
		if archived[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		fs, err := verifyJob(ctx, store, batch, id, archived[id], sidecars[id])
		if err != nil {
			return rep, err
		}
		rep.Checked++
		rep.Findings = append(rep.Findings, fs...)
	}
	return rep, nil
}

func verifyJob(ctx context.Context, store archive.Store, batch, id string, j *jobs.Job, haveSidecar bool) ([]finding, error) {
	var out []finding
	var sc archive.Sidecar
	if haveSidecar {
		var err error
		sc, err = archive.ReadSidecar(ctx, store, batch, id)
		if err != nil && ctx.Err() != nil {
			return nil, err
		}
		if err != nil {
			if j == nil {
				return []finding{{ID: id, Key: archive.SidecarKey(batch, id), Problem: "corrupt", Detail: err.Error()}}, nil
			}
			haveSidecar = false
		}
	}
	if !haveSidecar {
		sc = worker.SidecarFor(j)
		if ext := strings.TrimPrefix(path.Ext(j.Location), "."); ext != "" {
			sc.Format = ext
		}
		out = append(out, finding{ID: id, Key: archive.SidecarKey(batch, id), Problem: "sidecar", Detail: "missing or unreadable"})
	}
	src, expires := sc.SourceURL, sc.ExpiresAt
	if j != nil {
		// The ledger keeps the result URL as Kie gave it; a sidecar may name a direct link that
		// lived 20 minutes.
		src, expires = j.ResultURL, j.ExpiresAt
	}
	repairFrom := sc
	repairFrom.SourceURL = src
	key := archive.ImageKey(batch, id, sc.Format)
	sum, err := hashObject(ctx, store, key)
	switch {
	case errors.Is(err, archive.ErrNotFound):
		out = append(out, finding{ID: id, Key: key, Problem: "missing", Detail: "no such object"})
	case err != nil && ctx.Err() != nil:
		return nil, err
	case err != nil:
		out = append(out, finding{ID: id, Key: key, Problem: "corrupt", Detail: "unreadable: " + err.Error()})
	case haveSidecar && sum != sc.SHA256:
		out = append(out, finding{ID: id, Key: key, Problem: "corrupt", Detail: fmt.Sprintf("sha256 %s, the sidecar records %s", sum, sc.SHA256)})
	case j != nil && j.SHA256 != "" && sum != j.SHA256:
		out = append(out, finding{ID: id, Key: key, Problem: "corrupt", Detail: fmt.Sprintf("sha256 %s, the ledger records %s", sum, j.SHA256)})
	}
	for i := range out {
		out[i].sidecar, out[i].expiresAt = repairFrom, expires
	}
	if o := sc.Origin; o != nil && o.Key != "" {
		osum, err := hashObject(ctx, store, o.Key)
		detail := ""
		switch {
		case errors.Is(err, archive.ErrNotFound):
			detail = "origin image: no such object"
		case err != nil:
			detail = "origin image unreadable: " + err.Error()
		case osum != o.SHA256:
			detail = fmt.Sprintf("origin image sha256 %s, the sidecar records %s", osum, o.SHA256)
		}
		if detail != "" {
			out = append(out, finding{ID: id, Key: o.Key, Problem: "origin", Detail: detail, origin: true})
		}
	}
	return out, nil
}

// hashObject reads an object whole and returns its hex sha256.
func hashObject(ctx context.Context, store archive.Store, key string) (string, error) {
	rc, err := store.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
