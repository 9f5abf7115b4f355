package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/worker"
)

func newVerifyCmd() *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "verify BATCH",
		Short: "Re-read every archived image of a batch and check it against its sidecar and the ledger",
		Long: `verify re-reads every image of BATCH where it was archived and checks that its sha256 matches its
sidecar and, while the Redis ledger still holds the job, the ledger. An image archived with
--embed-metadata is checked twice: as archived against its sidecar's sha256, and without its
embedded provenance against the sourceSha256 of what Kie served. Jobs are found both in the ledger and
through the sidecars in the archive, so batches the ledger has forgotten are verified too.

The archive is the one the ledger recorded for the batch, wherever verify runs from; --archive
names another one (a copy, say) to check instead, and is needed only once the ledger has
forgotten the batch. Every missing or corrupt image is listed, and the exit code is 1 whenever a
problem is left unfixed, 0 when every image is intact.
--repair downloads the broken ones again from Kie while their result has not expired, and
republishes them with their sidecars in the batch's own archive (never elsewhere); the ones past
expiry are reported as "expired, cannot repair".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			needs := []need{needRedis}
			if repair {
				needs = append(needs, needKey) // --repair downloads from Kie
			}
			cfg, err := loadConfig(cmd, needs...)
			if err != nil {
				return err
			}
			batch := args[0]
			if err := validBatch(batch); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			rdb, err := app.OpenRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			recorded, roots, err := recordedImages(ctx, jobs.NewLedger(rdb, jobs.LedgerOptions{Namespace: cfg.Namespace}), batch)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			store, err := batchArchive(ctx, cfg, batch, roots, repair, out)
			if err != nil {
				return err
			}
			defer store.Close()

			rep, err := archive.VerifyBatch(ctx, store, batch, recorded)
			if err != nil {
				return err
			}
			if rep.Checked == 0 {
				return &exitError{code: exitFailed, err: fmt.Errorf("batch %s: nothing archived (no archived job in the ledger, no sidecar in %s)", batch, store.Location(batch))}
			}
			var fixer *worker.Worker
			if repair && len(rep.Findings) > 0 {
				w, err := app.NewWorker(cfg, app.Deps{Redis: rdb, Store: store, Logger: app.NewLogger(cfg, cmd.ErrOrStderr())})
				if err != nil {
					return err
				}
				defer w.Close()
				fixer = w.Worker
			}
			repaired := repairFindings(ctx, fixer, batch, rep.Findings, out)
			bad := rep.Bad()
			fmt.Fprintf(out, "batch %s: %d images verified, %d intact, %d with problems", batch, rep.Checked, rep.Checked-bad, bad)
			if fixer != nil {
				fmt.Fprintf(out, ", %d repaired", repaired)
			}
			if rep.Embedded > 0 {
				fmt.Fprintf(out, "; %d carry embedded provenance and match the sha256 Kie served (sourceSha256)", rep.Embedded)
			}
			fmt.Fprintln(out)
			if repaired < bad {
				return &exitError{code: exitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "download missing and corrupt images again while their results have not expired")
	return cmd
}

// recordedImages is what the ledger holds of batch's archived images, and how many of them each
// archive root holds.
func recordedImages(ctx context.Context, l *jobs.Ledger, batch string) ([]archive.Recorded, map[string]int, error) {
	var recs []archive.Recorded
	roots := map[string]int{}
	err := l.Each(ctx, batch, func(j *jobs.Job) error {
		if j.State != jobs.Archived {
			return nil
		}
		recs = append(recs, archive.Recorded{ID: j.ID, Location: j.Location, SHA256: j.SHA256, Sidecar: worker.SidecarFor(j)})
		if root, _, ok := archive.SplitLocation(j.Location, batch); ok {
			roots[root]++
		}
		return nil
	})
	return recs, roots, err
}

// batchArchive opens the archive to verify: the batch's own, as the ledger recorded it, unless
// --archive names another. Repairing writes into it, so --repair refuses any archive but the
// batch's own: writing there would fork the batch over two archives.
func batchArchive(ctx context.Context, cfg config.Config, batch string, roots map[string]int, repair bool, out io.Writer) (archive.Store, error) {
	names := make([]string, 0, len(roots))
	for r := range roots {
		names = append(names, r)
	}
	slices.Sort(names)
	given := cfg.Given("archive")
	switch {
	case len(names) == 0: // the ledger has forgotten the batch: only --archive can say where it is
		return app.OpenStore(ctx, cfg)
	case len(names) > 1 && (repair || !given):
		parts := make([]string, len(names))
		for i, r := range names {
			parts[i] = fmt.Sprintf("%s (%d images)", r, roots[r])
		}
		return nil, usageErr(fmt.Errorf("batch %s: the ledger records its images in %d archives: %s; verify each with --archive (--repair only once they are one)",
			batch, len(names), strings.Join(parts, ", ")))
	case !given:
		s, err := archive.Open(ctx, names[0])
		if err != nil {
			return nil, fmt.Errorf("batch %s was archived in %s, which cannot be opened (%w); give --archive to say how to reach it", batch, names[0], err)
		}
		return s, nil
	}
	if repair && !sameArchive(cfg.Archive, names[0]) {
		return nil, usageErr(fmt.Errorf("batch %s was archived in %s, not in --archive %s: --repair writes only into the batch's own archive; "+
			"leave --archive out, or set it to %s", batch, names[0], cfg.Archive, names[0]))
	}
	s, err := app.OpenStore(ctx, cfg)
	if err != nil || len(names) > 1 || archive.IsRoot(s, names[0]) {
		return s, err
	}
	fmt.Fprintf(out, "batch %s was archived in %s; checking %s instead, as --archive asks\n", batch, names[0], s.Location(""))
	return s, nil
}

// sameArchive reports whether the archive setting loc names root, without opening it (opening a
// local archive creates its directory).
func sameArchive(loc, root string) bool {
	if strings.Contains(loc, "://") && !strings.HasPrefix(loc, "file://") {
		u, _, _ := strings.Cut(loc, "?")
		return strings.TrimRight(u, "/") == strings.TrimRight(root, "/")
	}
	abs, err := filepath.Abs(strings.TrimPrefix(strings.TrimPrefix(loc, "file://"), "localhost"))
	return err == nil && filepath.Clean(abs) == filepath.Clean(root)
}

// repairFindings downloads again, once per image, the images with findings (fixer nil: none),
// printing each finding and what became of it. It returns how many images were repaired whole.
func repairFindings(ctx context.Context, fixer *worker.Worker, batch string, findings []archive.Finding, out io.Writer) int {
	repaired := 0
	now := time.Now()
	for i := 0; i < len(findings); {
		id := findings[i].ID
		j := i
		for j < len(findings) && findings[j].ID == id {
			j++
		}
		image := findings[i:j]
		i = j
		// The image and its sidecar are repaired together, by one download; an origin image
		// never is, and leaves its job unrepaired.
		var from *archive.Sidecar
		whole := fixer != nil
		for _, f := range image {
			fmt.Fprintf(out, "%-8s %s  %s: %s\n", f.Problem, f.ID, f.Key, f.Detail)
			if fixer == nil {
				continue
			}
			if why := f.Unrepairable(now); why != "" {
				fmt.Fprintf(out, "         %s  %s\n", f.ID, why)
				whole = false
				continue
			}
			from = &f.Repair
		}
		if from == nil {
			continue
		}
		sc, err := fixer.Rearchive(ctx, *from)
		switch {
		case errors.Is(err, worker.ErrResultGone):
			fmt.Fprintf(out, "         %s  expired, cannot repair: %v\n", id, err)
		case err != nil:
			fmt.Fprintf(out, "         %s  repair failed: %v\n", id, err)
		default:
			fmt.Fprintf(out, "repaired %s  %s (sha256 %s)\n", id, archive.ImageKey(batch, sc.FileName(), sc.Format), sc.SHA256)
			if whole {
				repaired++
			}
		}
	}
	return repaired
}
