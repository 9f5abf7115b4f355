package archive

// Checking a batch already in the archive (kontextq verify): every image re-read and hashed,
// against its sidecar and what the job ledger recorded when it was archived.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Recorded is what the job ledger knows of one archived image.
type Recorded struct {
	ID string
	// Location is where the image was published: the Store's Location of its key.
	Location string
	// SHA256 is the image's hash as archived; "" when unknown.
	SHA256 string
	// Sidecar is the job as the ledger knows it, stood in for the archive's sidecar when that is
	// missing. Its SourceURL and ExpiresAt are the ones to repair from: the ledger keeps the
	// result URL as Kie gave it, where a sidecar may name a direct link that lived 20 minutes.
	Sidecar Sidecar
}

// Finding is one problem with one job's archived files.
type Finding struct {
	ID      string
	Key     string // the object at fault
	Problem string // missing, corrupt, sidecar or origin
	Detail  string

	// Repair is the sidecar to download the image again from and publish anew.
	Repair Sidecar
	// Origin: the problem is the origin image, which Kie keeps 10 minutes: never repairable.
	Origin bool
}

// Unrepairable says why f cannot be repaired at now, "" when it can.
func (f Finding) Unrepairable(now time.Time) string {
	switch {
	case f.Origin:
		return "cannot repair: Kie keeps originImageUrl only 10 minutes"
	case f.Repair.SourceURL == "":
		return "cannot repair: no result URL is known"
	case f.Repair.ExpiresAt.IsZero() || !now.Before(f.Repair.ExpiresAt):
		return fmt.Sprintf("expired, cannot repair (result expired %s)", f.Repair.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return ""
}

// Report is what VerifyBatch found.
type Report struct {
	Checked  int       // images checked, each counted once
	Findings []Finding // in job id order; a job may have several
	// Embedded counts the images archived with provenance embedded whose bytes as Kie served
	// them (the file without the inserted run) were checked against the sidecar's sourceSha256.
	Embedded int
}

// Bad counts the images with at least one finding.
func (r Report) Bad() int { return len(r.BadIDs()) }

// BadIDs lists the jobs with at least one finding, in order.
func (r Report) BadIDs() []string {
	var ids []string
	for _, f := range r.Findings {
		if len(ids) == 0 || ids[len(ids)-1] != f.ID {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

// VerifyBatch re-reads every archived image of batch in s and checks it against its sidecar and
// against recorded, the jobs the ledger holds archived in s. Images are found both ways, so jobs
// the ledger has forgotten (their sidecars remain) are checked too. Each image is read at the
// key its recorded location names.
func VerifyBatch(ctx context.Context, s Store, batch string, recorded []Recorded) (Report, error) {
	var rep Report
	known := map[string]*Recorded{}
	for i := range recorded {
		known[recorded[i].ID] = &recorded[i]
	}
	sidecars := map[string]bool{}
	err := s.List(ctx, batch+"/", func(key string, _ Info) error {
		name := strings.TrimPrefix(key, batch+"/")
		if !strings.Contains(name, "/") && path.Ext(name) == ".json" {
			sidecars[strings.TrimSuffix(name, ".json")] = true
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("listing the archive of %s: %w", batch, err)
	}
	ids := make([]string, 0, len(known)+len(sidecars))
	for id := range known {
		ids = append(ids, id)
	}
	for id := range sidecars {
		if known[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		fs, embedded, err := verifyImage(ctx, s, batch, id, known[id], sidecars[id])
		if err != nil {
			return rep, err
		}
		if embedded {
			rep.Embedded++
		}
		rep.Checked++
		rep.Findings = append(rep.Findings, fs...)
	}
	return rep, nil
}

// verifyImage checks one job's files; embedded reports that its source hash was checked too.
func verifyImage(ctx context.Context, s Store, batch, id string, rec *Recorded, haveSidecar bool) (_ []Finding, embedded bool, _ error) {
	var out []Finding
	var sc Sidecar
	if haveSidecar {
		var err error
		sc, err = ReadSidecar(ctx, s, batch, id)
		if err != nil && ctx.Err() != nil {
			return nil, false, err
		}
		if err != nil {
			if rec == nil {
				return []Finding{{ID: id, Key: SidecarKey(batch, id), Problem: "corrupt", Detail: err.Error()}}, false, nil
			}
			haveSidecar = false
		}
	}
	if !haveSidecar {
		sc = rec.Sidecar
		if ext := strings.TrimPrefix(path.Ext(filepath.ToSlash(rec.Location)), "."); ext != "" {
			sc.Format = ext
		}
		out = append(out, Finding{ID: id, Key: SidecarKey(batch, id), Problem: "sidecar", Detail: "missing or unreadable"})
	}
	repair := sc
	if rec != nil {
		repair.SourceURL, repair.ExpiresAt = rec.Sidecar.SourceURL, rec.Sidecar.ExpiresAt
	}
	key := ImageKey(batch, sc.FileName(), sc.Format)
	if rec != nil {
		if _, k, ok := SplitLocation(rec.Location, batch); ok {
			key = k // where it was recorded, whatever its name
		}
	}
	var skip *Embedding
	if haveSidecar && sc.Embedded != nil && sc.SourceSHA256 != "" {
		skip = sc.Embedded
	}
	sum, srcSum, err := hashObject(ctx, s, key, skip)
	switch {
	case errors.Is(err, ErrNotFound):
		out = append(out, Finding{ID: id, Key: key, Problem: "missing", Detail: "no such object"})
	case err != nil && ctx.Err() != nil:
		return nil, false, err
	case err != nil:
		out = append(out, Finding{ID: id, Key: key, Problem: "corrupt", Detail: "unreadable: " + err.Error()})
	case haveSidecar && sum != sc.SHA256:
		out = append(out, Finding{ID: id, Key: key, Problem: "corrupt", Detail: fmt.Sprintf("sha256 %s, the sidecar records %s", sum, sc.SHA256)})
	case rec != nil && rec.SHA256 != "" && sum != rec.SHA256:
		out = append(out, Finding{ID: id, Key: key, Problem: "corrupt", Detail: fmt.Sprintf("sha256 %s, the ledger records %s", sum, rec.SHA256)})
	case skip != nil && srcSum != sc.SourceSHA256:
		out = append(out, Finding{ID: id, Key: key, Problem: "corrupt", Detail: fmt.Sprintf("without its embedded metadata sha256 %s, the sidecar records Kie's %s", srcSum, sc.SourceSHA256)})
	case skip != nil:
		embedded = true
	}
	for i := range out {
		out[i].Repair = repair
	}
	if o := sc.Origin; o != nil && o.Key != "" {
		osum, err := HashObject(ctx, s, o.Key)
		detail := ""
		switch {
		case errors.Is(err, ErrNotFound):
			detail = "origin image: no such object"
		case err != nil:
			detail = "origin image unreadable: " + err.Error()
		case osum != o.SHA256:
			detail = fmt.Sprintf("origin image sha256 %s, the sidecar records %s", osum, o.SHA256)
		}
		if detail != "" {
			out = append(out, Finding{ID: id, Key: o.Key, Problem: "origin", Detail: detail, Origin: true})
		}
	}
	return out, embedded, nil
}

// HashObject reads an object whole and returns its hex sha256.
func HashObject(ctx context.Context, s Store, key string) (string, error) {
	sum, _, err := hashObject(ctx, s, key, nil)
	return sum, err
}

// hashObject reads an object whole and returns its hex sha256 and, when skip is given, the hex
// sha256 of its bytes without the skip.Length bytes at skip.Offset (what Kie served).
func hashObject(ctx context.Context, s Store, key string, skip *Embedding) (sum, source string, err error) {
	rc, err := s.Open(ctx, key)
	if err != nil {
		return "", "", err
	}
	defer rc.Close()
	h, src := sha256.New(), sha256.New()
	var w io.Writer = h
	if skip != nil {
		w = io.MultiWriter(h, &skipWriter{w: src, from: skip.Offset, to: skip.Offset + skip.Length})
	}
	if _, err := io.Copy(w, rc); err != nil {
		return "", "", fmt.Errorf("reading %s: %w", key, err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if skip != nil {
		source = hex.EncodeToString(src.Sum(nil))
	}
	return sum, source, nil
}

// skipWriter passes on everything but the bytes at stream offsets [from, to).
type skipWriter struct {
	w        io.Writer
	n        int64
	from, to int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	start, end := s.n, s.n+int64(len(p))
	s.n = end
	if end <= s.from || start >= s.to {
		return len(p), write(s.w, p)
	}
	if start < s.from {
		if err := write(s.w, p[:s.from-start]); err != nil {
			return 0, err
		}
	}
	if end > s.to {
		if err := write(s.w, p[max(s.to-start, 0):]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func write(w io.Writer, p []byte) error {
	_, err := w.Write(p)
	return err
}

// SplitLocation splits a location recorded for an object of batch (a Store's Location of its key:
// "/srv/archive/b/x.png", "s3://bucket/prefix/b/x.png") into the archive root, in the same form
// ("/srv/archive", "s3://bucket/prefix"), and the key ("b/x.png"), whatever the object's name. ok is
// false when the location names no object of batch.
func SplitLocation(location, batch string) (root, key string, ok bool) {
	slashed := filepath.ToSlash(location) // the same length: one character for one
	i := strings.LastIndex(slashed, "/"+batch+"/")
	if i <= 0 || strings.HasSuffix(slashed, "/") {
		return "", "", false
	}
	return location[:i], slashed[i+1:], true
}

// IsRoot reports whether s is the archive at root (as SplitLocation gives it).
func IsRoot(s Store, root string) bool {
	trim := func(v string) string { return strings.TrimRight(v, "/"+string(filepath.Separator)) }
	return trim(s.Location("")) == trim(root)
}
