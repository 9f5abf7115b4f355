package archive

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Open opens the store a location names: a directory ("./archive", "/srv/archive",
// "file:///srv/archive") or an S3 bucket ("s3://bucket/prefix?endpoint=...", see OpenS3).
func Open(ctx context.Context, location string) (Store, error) {
	if !strings.Contains(location, "://") {
		return NewLocal(location)
	}
	u, err := url.Parse(location)
	if err != nil {
		return nil, fmt.Errorf("archive: open %q: %w", location, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("archive: open %s: file URLs must name a local path (file:///abs/dir)", u.Redacted())
		}
		if u.Path == "" {
			return nil, fmt.Errorf("archive: open %s: no path", u.Redacted())
		}
		return NewLocal(u.Path)
	case "s3":
		return OpenS3(ctx, location)
	default:
		return nil, fmt.Errorf("archive: open %s: unsupported scheme %q (want a directory, file:// or s3://)", u.Redacted(), u.Scheme)
	}
}
