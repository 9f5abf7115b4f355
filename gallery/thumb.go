package gallery

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	_ "image/png" // Kie serves png as well as jpeg
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/image/draw"

	"github.com/kontextq/kontextq/archive"
)

// ThumbSize is the longest side of a thumbnail, in pixels: twice what the page shows, so that
// thumbnails stay sharp on high-density screens.
const ThumbSize = 320

// maxOriginal bounds what a thumbnail is made from: Kie's images are a few megabytes, and
// anything far larger under an image's key is not one of them.
const maxOriginal = 64 << 20

// maxPixels bounds the decoded size (a small file can declare a huge image).
const maxPixels = 64 << 20

// Thumbnail makes a JPEG thumbnail of a JPEG or PNG image, at most ThumbSize on its longest
// side (a smaller image keeps its size).
func Thumbnail(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxOriginal+1))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: reading the image: %w", err)
	}
	if len(data) > maxOriginal {
		return nil, fmt.Errorf("thumbnail: the image is larger than %d MiB", maxOriginal>>20)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w", err)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels || cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("thumbnail: the image is %dx%d pixels, too large to show", cfg.Width, cfg.Height)
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w", err)
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w > ThumbSize || h > ThumbSize {
		if w >= h {
			w, h = ThumbSize, max(1, h*ThumbSize/w)
		} else {
			w, h = max(1, w*ThumbSize/h), ThumbSize
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.BiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: 80}); err != nil {
		return nil, fmt.Errorf("thumbnail: %w", err)
	}
	return out.Bytes(), nil
}

// Thumbs is a directory of thumbnails, each made once. A thumbnail is named by the sha256 of
// its original (which the ledger records), never by a batch or job name: nothing a page asks
// for can name a file outside the directory, and an image archived again under the same key
// gets a new thumbnail.
type Thumbs struct {
	dir string
	// sem bounds the thumbnails made at once: decoding is CPU-bound, and a page asks for a
	// hundred at a time.
	sem chan struct{}
	mu  sync.Mutex
	// making holds the thumbnails being made, so that a second request waits for the first.
	making map[string]*making
}

type making struct {
	done chan struct{}
	err  error
}

// NewThumbs opens (creating it when needed) a thumbnail directory.
func NewThumbs(dir string, parallel int) (*Thumbs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("thumbnail cache: %w", err)
	}
	return &Thumbs{dir: dir, sem: make(chan struct{}, max(1, parallel)), making: map[string]*making{}}, nil
}

// Dir is the directory the thumbnails are in.
func (t *Thumbs) Dir() string { return t.dir }

// Name is the file name of the thumbnail of an image with the given sha256, relative to Dir.
func Name(sha string) (string, error) {
	if len(sha) != 64 {
		return "", fmt.Errorf("thumbnail: %q is not a sha256", sha)
	}
	if _, err := hex.DecodeString(sha); err != nil {
		return "", fmt.Errorf("thumbnail: %q is not a sha256", sha)
	}
	return sha[:2] + "/" + sha + ".jpg", nil
}

// Path returns the file of the thumbnail of the image stored at key with the given sha256,
// making it first if needed.
func (t *Thumbs) Path(ctx context.Context, store archive.Store, key, sha string) (string, error) {
	name, err := Name(sha)
	if err != nil {
		return "", err
	}
	p := filepath.Join(t.dir, filepath.FromSlash(name))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	t.mu.Lock()
	m, busy := t.making[sha]
	if !busy {
		m = &making{done: make(chan struct{})}
		t.making[sha] = m
	}
	t.mu.Unlock()
	if busy {
		select {
		case <-m.done:
			return p, m.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	m.err = t.make(ctx, store, key, p)
	t.mu.Lock()
	delete(t.making, sha)
	t.mu.Unlock()
	close(m.done)
	return p, m.err
}

func (t *Thumbs) make(ctx context.Context, store archive.Store, key, p string) error {
	select {
	case t.sem <- struct{}{}:
		defer func() { <-t.sem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	rc, err := store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := Thumbnail(rc)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return WriteFile(p, data)
}

// WriteFile publishes data at p whole (a temporary file renamed into place): a reader never
// finds half a thumbnail or half a page.
func WriteFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".kontextq-*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
