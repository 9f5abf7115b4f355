package gallery

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"image/png"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
)

func TestThumbnailKeepsTheShapeWithinThumbSize(t *testing.T) {
	for _, tc := range []struct{ w, h, ww, wh int }{
		{1024, 512, ThumbSize, ThumbSize / 2},
		{600, 1200, ThumbSize / 2, ThumbSize},
		{100, 80, 100, 80}, // small images keep their size
	} {
		var src bytes.Buffer
		if err := png.Encode(&src, image.NewRGBA(image.Rect(0, 0, tc.w, tc.h))); err != nil {
			t.Fatal(err)
		}
		out, err := Thumbnail(&src)
		if err != nil {
			t.Fatalf("%dx%d: %v", tc.w, tc.h, err)
		}
		img, err := jpeg.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("%dx%d: not a JPEG: %v", tc.w, tc.h, err)
		}
		if b := img.Bounds(); b.Dx() != tc.ww || b.Dy() != tc.wh {
			t.Errorf("%dx%d: thumbnail %dx%d, want %dx%d", tc.w, tc.h, b.Dx(), b.Dy(), tc.ww, tc.wh)
		}
	}
	if _, err := Thumbnail(strings.NewReader("<html>not an image</html>")); err == nil {
		t.Error("a thumbnail of a text file")
	}
}

func TestImageKeyStaysInTheBatchFolderOfTheArchive(t *testing.T) {
	dir := t.TempDir()
	store, err := archive.NewLocal(filepath.Join(dir, "archive"))
	if err != nil {
		t.Fatal(err)
	}
	job := func(loc string) *jobs.Job {
		return &jobs.Job{Ref: jobs.Ref{Batch: "b", ID: "x"}, State: jobs.Archived, Location: loc}
	}
	if key, err := ImageKey(store, job(store.Location("b/x.png"))); err != nil || key != "b/x.png" {
		t.Errorf("ImageKey of b/x.png = %q, %v", key, err)
	}
	for _, loc := range []string{
		filepath.Join(dir, "secret.png"),            // beside the archive
		filepath.Join(dir, "archive-other/b/x.png"), // a directory whose name starts like the archive's
		store.Location("c/x.png"),                   // another batch
		store.Location("b/../../secret.png"),        // climbing out
		store.Location("b/.kontextq-x.tmp"),         // a temporary file
		"",
	} {
		if key, err := ImageKey(store, job(loc)); !errors.Is(err, ErrNoImage) {
			t.Errorf("ImageKey of %q = %q, %v; want ErrNoImage", loc, key, err)
		}
	}
	failed := job(store.Location("b/x.png"))
	failed.State = jobs.Failed
	if _, err := ImageKey(store, failed); !errors.Is(err, ErrNoImage) {
		t.Errorf("a failed job has an image: %v", err)
	}
}
