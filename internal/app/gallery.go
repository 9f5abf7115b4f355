package app

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/server"
)

// ThumbDir is where a server keeps the gallery's thumbnails: dir when set, else kontextq/thumbs
// in the user's cache directory.
func ThumbDir(dir string) string {
	if dir != "" {
		return dir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kontextq", "thumbs")
	}
	return filepath.Join(os.TempDir(), "kontextq-thumbs")
}

// galleryOptions give a server its gallery: the archive to show images from, the thumbnail
// cache, the prices, and the account's rate for the batches' ETAs.
func galleryOptions(cfg config.Config, d ServeDeps, o *server.Options) error {
	o.Prices, o.Rate = cfg.Prices, cfg.Rate
	if d.Store == nil {
		return nil
	}
	th, err := gallery.NewThumbs(ThumbDir(d.ThumbCache), 2)
	if err != nil {
		return configErr(fmt.Errorf("--thumb-cache: %w", err))
	}
	o.Archive, o.Thumbs = d.Store, th
	return nil
}
