// Package archive keeps the generated images for good, long after Kie deletes them.
//
// A Store holds objects under slash-separated keys ("<batch>/<id>.png", "<batch>/<id>.json").
// Its one promise is that an object is visible only complete and verified: Put is told the
// size and sha256 the caller expects (the worker knows both from its local spool file), checks
// them again while streaming, and publishes atomically only when they match: a local file is
// written under a hidden temporary name and renamed; an S3 object is a multipart upload that
// is completed only after the check, and aborted otherwise. So the worker may mark a job
// archived as soon as Put returns nil, and a crash, a short read, a full disk or a cancelled
// context never leaves a truncated image where a user would take it for the real one.
//
// Next to each image lies a Sidecar, the lasting record of where the image came from; Redis
// forgets finished jobs, the archive does not.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Info describes a stored object.
type Info struct {
	// Size is the object's length in bytes.
	Size int64
	// SHA256 is the lowercase hex sha256 of the content; "" when the store cannot tell without
	// reading the object (a local Stat, any List).
	SHA256 string
	// ContentType is the media type, e.g. "image/png". In Put it is optional: stores that keep
	// it store it, and otherwise the type follows from the key's extension.
	ContentType string
	// ModTime is when the object was last written. Put ignores it.
	ModTime time.Time
}

var (
	// ErrNotFound is returned (wrapped) by Open and Stat for a key that holds no object.
	ErrNotFound = errors.New("archive: object not found")
	// ErrCorrupt is returned (wrapped) by Put when the stream did not match the declared
	// size or sha256. Nothing was published: a previous object under the key is untouched.
	ErrCorrupt = errors.New("archive: content does not match declared size or sha256")
	// ErrInvalidKey is returned (wrapped) for a key ValidKey refuses.
	ErrInvalidKey = errors.New("archive: invalid key")
)

// Store is an archive of immutable-looking objects: each Put replaces an object whole.
// Implementations are safe for concurrent use.
type Store interface {
	// Put streams r into key. The object becomes visible only complete: it is written under a
	// temporary name (or as an uncompleted multipart upload), its size and sha256 are checked
	// against want, and only then published atomically, replacing any previous object. On any
	// error nothing new is visible. want.Size and want.SHA256 are required.
	Put(ctx context.Context, key string, r io.Reader, want Info) error
	// Open returns the object's content; ErrNotFound if there is none.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes the object; ErrNotFound if there is none.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for each complete object whose key starts with prefix (a plain string
	// prefix, "" for all), in no particular order. Objects being written are never listed.
	// The Info may lack SHA256 and ContentType. An error from fn stops the listing and is
	// returned.
	List(ctx context.Context, prefix string, fn func(key string, info Info) error) error
	// Location tells a human where to find key: an absolute path or an s3:// URL.
	Location(key string) string
	// Close releases the store's resources.
	Close() error
}

// maxSegment is the longest path segment most file systems accept.
const maxSegment = 255

// ValidKey reports whether key can name an object in every store: relative, slash-separated,
// no empty, "." or ".." segments, no control characters, valid UTF-8, each segment at most
// 255 bytes. Segments may not start with "." either: the local store writes its temporary
// files under such names and List skips them, so an object named that way could never be
// listed.
func ValidKey(key string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why)
	}
	if key == "" {
		return bad("empty")
	}
	if !utf8.ValidString(key) {
		return bad("not valid UTF-8")
	}
	if strings.HasPrefix(key, "/") {
		return bad("absolute")
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return bad("control character")
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return bad("empty segment")
		case seg == "..":
			return bad(`".." segment`)
		case strings.HasPrefix(seg, "."):
			return bad(`segment starts with "."`)
		case len(seg) > maxSegment:
			return bad(fmt.Sprintf("segment longer than %d bytes", maxSegment))
		}
	}
	return nil
}

// ImageKey is where a job's image lives: "<batch>/<name>.<format>", name being the job's id or
// the name given at load (see Sidecar.FileName), format Kie's outputFormat ("jpeg" or "png").
func ImageKey(batch, name, format string) string {
	return batch + "/" + name + "." + strings.ToLower(format)
}

// SidecarKey is where a job's sidecar lives: "<batch>/<id>.json", by the id whatever the
// image's name, so that a job's record is found from the job alone.
func SidecarKey(batch, id string) string {
	return batch + "/" + id + ".json"
}

// contentTypeFor gives the media type of the archive's own kinds of files. It is a fixed
// table rather than mime.TypeByExtension, whose answers depend on the host's mime files.
func contentTypeFor(key string) string {
	switch strings.ToLower(path.Ext(key)) {
	case ".png":
		return "image/png"
	case ".jpeg", ".jpg":
		return "image/jpeg"
	case ".webp":
		return "image/webp"
	case ".json":
		return "application/json"
	default:
		return "application/octet-stream"
	}
}

// validPrefix accepts what List may be asked for: "" or anything that could start a valid key.
func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A prefix ending in "/" is checked with a harmless last segment added.
	check := prefix
	if strings.HasSuffix(prefix, "/") {
		check += "x"
	}
	if err := ValidKey(check); err != nil {
		return fmt.Errorf("%w %q: not a key prefix", ErrInvalidKey, prefix)
	}
	return nil
}
