package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/internal/app"
)

func newGalleryCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "gallery BATCH",
		Short: "Write a batch's gallery as a static index.html with thumbnails, to open in a browser",
		Long: `gallery writes the page that kontextq serve shows at /gallery/BATCH/ as a static index.html
beside a thumbnail of every archived image (thumbs/), for people who never run serve: every
image with its prompt, state and failure reason, a page at a time, filtered by state and searched
by prompt in the browser. It is a snapshot: run it again to see a batch's progress; thumbnails
already there are kept.

By default it writes into the batch's folder of the archive (--archive), where the page links
each original beside it. With --out DIR it writes there instead, linking the originals of a local
archive by relative path (an S3 archive's originals are not linked).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openSession(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			return writeGallery(cmd.Context(), s, args[0], out, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write index.html and thumbs/ into (default: the batch's folder in the archive)")
	return cmd
}

func writeGallery(ctx context.Context, s *session, batch, out string, stdout, stderr io.Writer) error {
	l, _, err := s.batchLedger(ctx, batch)
	if err != nil {
		return err
	}
	store, err := openArchiveToRead(ctx, s.cfg, s.log)
	if err != nil {
		return err
	}
	if store == nil {
		return usageErr(fmt.Errorf("--archive (KONTEXTQ_ARCHIVE): %s does not exist; give the archive the batch was archived into", s.cfg.Archive))
	}
	defer store.Close()

	var o gallery.StaticOptions
	var where string
	if out == "" {
		o, where = archiveTarget(store, batch)
	} else {
		if o, where, err = dirTarget(store, out); err != nil {
			return err
		}
	}
	o.Parallel = max(1, runtime.NumCPU())
	var ctr *counter
	o.Progress = func(done, total int) {
		if ctr == nil {
			ctr = newCounter(stderr, "thumbnails", int64(total), 5*time.Second)
		}
		ctr.Set(int64(done))
	}
	g := gallery.New(gallery.Options{Ledger: l, Store: store, Prices: s.cfg.Prices, Rate: s.cfg.Rate})
	rep, err := g.WriteStatic(ctx, batch, o)
	if ctr != nil {
		ctr.Finish()
	}
	if err != nil {
		return fmt.Errorf("gallery of %s: %w", batch, err)
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(stderr, "no thumbnail: %s\n", f)
	}
	fmt.Fprintf(stdout, "gallery of batch %s: %d jobs, %d images (%d thumbnails made now)\n%s\n",
		batch, rep.Jobs, rep.Thumbnails, rep.Made, where)
	return nil
}

// archiveTarget writes the gallery into the batch's folder of the archive, through the store, so
// that a page in an S3 bucket links its originals too.
func archiveTarget(store archive.Store, batch string) (gallery.StaticOptions, string) {
	return gallery.StaticOptions{
		Write: func(ctx context.Context, name string, data []byte) error {
			sum := sha256.Sum256(data)
			return store.Put(ctx, batch+"/"+name, bytes.NewReader(data), archive.Info{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		},
		Exists: func(ctx context.Context, name string) bool {
			_, err := store.Stat(ctx, batch+"/"+name)
			return err == nil
		},
		ImageHref: func(key string) string { return hrefOf(strings.TrimPrefix(key, batch+"/")) },
	}, pageLocation(store.Location(batch + "/index.html"))
}

// dirTarget writes the gallery into a directory of its own.
func dirTarget(store archive.Store, out string) (gallery.StaticOptions, string, error) {
	dir, err := filepath.Abs(out)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return gallery.StaticOptions{}, "", usageErr(fmt.Errorf("--out %s: %w", out, err))
	}
	o := gallery.StaticOptions{
		Write: func(_ context.Context, name string, data []byte) error {
			return gallery.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), data)
		},
		Exists: func(_ context.Context, name string) bool {
			_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name)))
			return err == nil
		},
	}
	if local, ok := store.(*archive.Local); ok {
		o.ImageHref = func(key string) string {
			rel, err := filepath.Rel(dir, local.Location(key))
			if err != nil {
				return ""
			}
			return hrefOf(filepath.ToSlash(rel))
		}
	}
	return o, pageLocation(filepath.Join(dir, "index.html")), nil
}

// hrefOf is a relative address of a slash-separated path.
func hrefOf(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// pageLocation is how to open the written page: a file:// URL for a local file.
func pageLocation(loc string) string {
	if filepath.IsAbs(loc) {
		return "open file://" + hrefOf(filepath.ToSlash(loc))
	}
	return "written to " + loc
}

// openArchiveToRead opens the archive for reading only: a local archive directory that does not
// exist is not created (nil, nil), since a reader has nothing to find there.
func openArchiveToRead(ctx context.Context, cfg config.Config, log *slog.Logger) (archive.Store, error) {
	dir := cfg.Archive
	if u, err := url.Parse(cfg.Archive); err == nil && u.Scheme == "file" {
		dir = u.Path
	} else if strings.Contains(cfg.Archive, "://") {
		return app.OpenStore(ctx, cfg)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		log.Info("the archive directory does not exist: the gallery shows no images", "archive", cfg.Archive)
		return nil, nil
	}
	return app.OpenStore(ctx, cfg)
}
