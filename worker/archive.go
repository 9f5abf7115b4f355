package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // result formats
	_ "image/png"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
)

const (
	// maxImageBytes caps one download; Kie's images are a few MB.
	maxImageBytes = 256 << 20
	// maxArchiveBackoff and jobs.ArchiveMaxRetry spend an archive task's retries over about
	// half an hour of outage (a full disk, a bucket down).
	maxArchiveBackoff = time.Minute
	// originTimeout bounds the fetch of an origin image, so that it never holds up the result's
	// archiving for long.
	originTimeout = time.Minute
)

// ErrResultGone is returned (wrapped) when Kie no longer serves a result, even through a fresh
// direct link.
var ErrResultGone = errors.New("result is no longer downloadable")

// queueArchive enqueues the archive task of a generated job (see jobs.Tasks.Archive).
func (w *Worker) queueArchive(ctx context.Context, j *jobs.Job) error {
	return w.tasks.Archive(ctx, j.Ref, j.ExpiresAt)
}

// taskRetryDelay is asynq's RetryDelayFunc. Archive tasks back off to at most a minute: an
// archive waiting out a long backoff after the store came back would be a result nearer its
// expiry for nothing.
func taskRetryDelay(n int, err error, t *asynq.Task) time.Duration {
	if t.Type() == jobs.TypeArchive && Classify(err).Action == Retry {
		return archiveBackoff(n)
	}
	return retryDelay(n, err, t)
}

// archiveBackoff is 1 s, 2 s, 4 s ... capped at maxArchiveBackoff, with up to a quarter of jitter.
func archiveBackoff(n int) time.Duration {
	base := min(time.Second<<min(n, 7), maxArchiveBackoff)
	return base + rand.N(base/4+1)
}

func (w *Worker) handleArchive(ctx context.Context, t *asynq.Task) error {
	var p jobs.Payload
	j, err := w.taskJob(ctx, t, &p)
	if j == nil {
		return err
	}
	if j.State != jobs.Generated {
		return nil // archived already, or not ready
	}
	granted, retry, err := w.o.TransferLimiter.WaitAtMost(ctx, maxLimiterWait)
	if !granted {
		why := "waiting for the transfer rate limit"
		if err != nil {
			why = "transfer rate limiter unavailable: " + err.Error()
		}
		return &RateLimitedError{RetryAfter: max(retry, 100*time.Millisecond), Why: why}
	}
	err = w.archive(ctx, j)
	if err != nil && !errors.Is(err, asynq.SkipRetry) {
		_ = w.ledger.SetError(ctx, j.Ref, "archive: "+err.Error())
		if lastAttempt(ctx) {
			w.log.Error("archiving failed on its last attempt; the sweeper will try again", "job", j.Ref.String(), "expires", j.ExpiresAt, "err", err)
		}
	}
	return err
}

// archive downloads, verifies and stores one image (and its origin, when asked), then its
// sidecar, then marks the job: the ledger says archived only once both are in the store.
func (w *Worker) archive(ctx context.Context, j *jobs.Job) error {
	sp, err := w.fetch(ctx, j.ResultURL, j.Spec.Format())
	if errors.Is(err, ErrResultGone) {
		// Neither the result URL nor a fresh direct link serves it: Kie has let it expire,
		// whatever lifetime was assumed. End the job where a person sees it rather than keep
		// retrying a download that cannot succeed while the batch never finishes.
		msg := fmt.Sprintf("result expired before it was archived (completed %s, expiry assumed at %s): %v",
			j.CompleteTime.UTC().Format(time.RFC3339), j.ExpiresAt.UTC().Format(time.RFC3339), err)
		ok, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Generated}, "", jobs.Expired, msg)
		if ferr != nil {
			return ferr
		}
		if ok {
			w.o.Observer.Failed(jobs.Expired)
			w.log.Error("result expired before it was archived", "job", j.Ref.String(), "task", j.TaskID, "err", err)
		}
		return fmt.Errorf("%w: %s", asynq.SkipRetry, msg)
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", j.Ref, err)
	}
	defer sp.close()
	if sp.format != j.Spec.Format() {
		w.log.Warn("result format differs from the requested one; archived as what it is", "job", j.Ref.String(), "requested", j.Spec.Format(), "got", sp.format)
	}
	sc := SidecarFor(j)
	if w.o.EmbedMetadata {
		sp = w.withProvenance(sp, &sc)
		defer sp.close()
	}
	key := archive.ImageKey(j.Batch, j.Spec.FileName(), sp.format)
	if err := w.publish(ctx, key, sp); err != nil {
		return err
	}
	sc.SourceURL, sc.SHA256, sc.Bytes, sc.Format, sc.ArchivedAt = sp.url, sp.sum, sp.size, sp.format, w.o.Now()
	if w.o.ArchiveOrigin && j.OriginURL != "" {
		sc.Origin = w.archiveOrigin(ctx, j)
	}
	if err := archive.PutSidecar(ctx, w.o.Store, sc); err != nil {
		return fmt.Errorf("storing sidecar of %s: %w", j.Ref, err)
	}
	ok, err := w.ledger.RecordArchived(ctx, j.Ref, jobs.ArchiveRecord{Location: w.o.Store.Location(key), SHA256: sp.sum, Bytes: sp.size, At: sc.ArchivedAt})
	if err != nil {
		return err
	}
	if ok {
		w.o.Observer.Archived(sp.size)
		w.log.Debug("archived", "job", j.Ref.String(), "bytes", sp.size, "location", w.o.Store.Location(key))
	}
	return nil
}

// SidecarFor is the sidecar of a job as the ledger knows it, before the image's own fields
// (SourceURL, SHA256, Bytes, Format, ArchivedAt) are filled in.
func SidecarFor(j *jobs.Job) archive.Sidecar {
	req, _ := json.Marshal(j.Spec.Request(j.Spec.InputImage, ""))
	return archive.Sidecar{
		ID: j.ID, Batch: j.Batch, Name: j.Spec.Name, File: j.Spec.File, Line: j.Spec.Line, TaskID: j.TaskID, Request: req, SourceURL: j.ResultURL,
		SHA256: j.SHA256, Bytes: j.Bytes, Format: j.Spec.Format(),
		CreateTime: j.CreateTime, CompleteTime: j.CompleteTime, ArchivedAt: j.ArchivedAt,
		ExpiresAt: j.ExpiresAt, OriginURL: j.OriginURL, Attempts: j.Submissions,
	}
}

// archiveOrigin stores the job's originImageUrl beside its result. It never fails: whatever
// goes wrong is logged and returned as the sidecar's note.
func (w *Worker) archiveOrigin(ctx context.Context, j *jobs.Job) *archive.OriginImage {
	note := func(err error) *archive.OriginImage {
		w.log.Warn("origin image not archived; the result is archived regardless", "job", j.Ref.String(), "err", err)
		return &archive.OriginImage{Error: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, originTimeout)
	defer cancel()
	if granted, _, err := w.o.TransferLimiter.WaitAtMost(ctx, maxLimiterWait); !granted {
		if err == nil {
			err = errors.New("no transfer token in time")
		}
		return note(fmt.Errorf("waiting for the transfer rate limit: %w", err))
	}
	sp, err := w.fetch(ctx, j.OriginURL, j.Spec.Format())
	if err != nil {
		return note(err)
	}
	defer sp.close()
	key := j.Batch + "/" + j.Spec.FileName() + ".origin." + sp.format
	if err := w.publish(ctx, key, sp); err != nil {
		return note(err)
	}
	return &archive.OriginImage{Key: key, SHA256: sp.sum, Bytes: sp.size}
}

// Rearchive downloads an archived image from Kie again and publishes it and its sidecar anew:
// the repair of an image found missing or corrupt in the archive. sc describes the image as
// archived (its sidecar, or SidecarFor its ledger record); sc.SourceURL is what is downloaded,
// with a fresh direct link asked for when it is refused. The ledger's record, if it still holds
// the job archived, is updated to match. It returns the sidecar now stored; a result Kie no
// longer serves gives an error wrapping ErrResultGone. Run it from a Worker that is not
// necessarily running: it uses only its Kie client, store and transfer limiter.
func (w *Worker) Rearchive(ctx context.Context, sc archive.Sidecar) (archive.Sidecar, error) {
	ref := jobs.Ref{Batch: sc.Batch, ID: sc.ID}
	for {
		granted, retry, err := w.o.TransferLimiter.WaitAtMost(ctx, maxLimiterWait)
		if granted {
			break
		}
		if err != nil {
			return sc, fmt.Errorf("re-archive %s: transfer rate limiter: %w", ref, err)
		}
		select {
		case <-ctx.Done():
			return sc, fmt.Errorf("re-archive %s: %w", ref, ctx.Err())
		case <-time.After(max(retry, 10*time.Millisecond)):
		}
	}
	sp, err := w.fetch(ctx, sc.SourceURL, sc.Format)
	if err != nil {
		return sc, fmt.Errorf("re-archive %s: %w", ref, err)
	}
	defer sp.close()
	embed := w.o.EmbedMetadata || sc.Embedded != nil // a repair restores the image as it was archived
	sc.SourceSHA256, sc.SourceBytes, sc.Embedded = "", 0, nil
	if embed {
		sp = w.withProvenance(sp, &sc)
		defer sp.close()
	}
	key := archive.ImageKey(sc.Batch, sc.FileName(), sp.format)
	if err := w.publish(ctx, key, sp); err != nil {
		return sc, err
	}
	sc.SourceURL, sc.SHA256, sc.Bytes, sc.Format, sc.ArchivedAt = sp.url, sp.sum, sp.size, sp.format, w.o.Now()
	if err := archive.PutSidecar(ctx, w.o.Store, sc); err != nil {
		return sc, fmt.Errorf("re-archive %s: storing sidecar: %w", ref, err)
	}
	err = w.ledger.RecordRearchived(ctx, ref, jobs.ArchiveRecord{Location: w.o.Store.Location(key), SHA256: sp.sum, Bytes: sp.size, At: sc.ArchivedAt})
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		return sc, fmt.Errorf("re-archive %s: %w", ref, err)
	}
	return sc, nil
}

// withProvenance returns sp with sc's provenance inserted (archive.EmbedProvenance), in a spool
// file of its own that the caller closes, and records in sc the hash of what Kie served and where
// the inserted bytes lie. When the image cannot carry it (an XMP packet too large for a JPEG
// segment, say) it logs why and returns sp itself, unchanged: the image is archived as served
// rather than not at all.
func (w *Worker) withProvenance(sp *spooled, sc *archive.Sidecar) *spooled {
	fail := func(err error) *spooled {
		w.log.Warn("provenance not embedded; the image is archived as Kie served it", "job", sc.Batch+"/"+sc.ID, "err", err)
		return &spooled{f: sp.f, url: sp.url, size: sp.size, sum: sp.sum, format: sp.format, borrowed: true}
	}
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	data, err := io.ReadAll(sp.f)
	if err != nil {
		return fail(err)
	}
	out, emb, err := archive.EmbedProvenance(data, sp.format, archive.ProvenanceOf(*sc))
	if err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(w.o.SpoolDir, "kontextq-*.part")
	if err != nil {
		return fail(fmt.Errorf("spool file: %w", err))
	}
	sum := sha256.Sum256(out)
	ns := &spooled{f: f, url: sp.url, size: int64(len(out)), sum: hex.EncodeToString(sum[:]), format: sp.format}
	if _, err := f.Write(out); err != nil {
		ns.close()
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		ns.close()
		return fail(err)
	}
	if _, err := verifyImage(f, sp.format); err != nil {
		ns.close()
		return fail(fmt.Errorf("with provenance: %w", err))
	}
	sc.SourceSHA256, sc.SourceBytes, sc.Embedded = sp.sum, sp.size, &emb
	return ns
}

// spooled is a downloaded image in a local spool file, hashed and decoded.
type spooled struct {
	f      *os.File
	url    string // the URL read (a fresh direct link when the first was refused)
	size   int64
	sum    string // hex sha256
	format string // as decoded: "jpeg" or "png"
	// borrowed: f belongs to another spooled, which closes it.
	borrowed bool
}

func (s *spooled) close() {
	if s.borrowed {
		return
	}
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// fetch downloads url into a spool file and checks that it decodes as an image.
func (w *Worker) fetch(ctx context.Context, url, wantFormat string) (*spooled, error) {
	f, err := os.CreateTemp(w.o.SpoolDir, "kontextq-*.part")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	sp := &spooled{f: f}
	if err := w.download(ctx, url, sp); err != nil {
		sp.close()
		return nil, err
	}
	if sp.format, err = verifyImage(f, wantFormat); err != nil {
		sp.close()
		return nil, err
	}
	return sp, nil
}

// publish stores a spooled image under key; the store checks size and sha256 again on the way.
func (w *Worker) publish(ctx context.Context, key string, sp *spooled) error {
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	if err := w.o.Store.Put(ctx, key, sp.f, archive.Info{Size: sp.size, SHA256: sp.sum, ContentType: "image/" + sp.format}); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	return nil
}

// download streams url into sp.f, hashing it. When the URL is refused or gone it asks Kie for a
// fresh direct link once; when that is refused too, the error wraps ErrResultGone.
func (w *Worker) download(ctx context.Context, url string, sp *spooled) error {
	resp, err := w.o.Kie.Fetch(ctx, url)
	if err != nil && Judge(EndpointDownload, err).Cause == CauseNotFound {
		fresh, derr := w.o.Kie.DownloadURL(ctx, url)
		if derr != nil {
			if Judge(EndpointDownloadURL, derr).Cause == CauseNotFound {
				return fmt.Errorf("download: %w: %v; refresh: %v", ErrResultGone, err, derr)
			}
			_, derr = w.refused(ctx, EndpointDownloadURL, derr, false)
			return fmt.Errorf("download: %w (refresh: %w)", err, derr)
		}
		url = fresh
		resp, err = w.o.Kie.Fetch(ctx, url)
		if err != nil && Judge(EndpointDownload, err).Cause == CauseNotFound {
			return fmt.Errorf("download: %w: the fresh link too: %v", ErrResultGone, err)
		}
	}
	if err != nil {
		_, err = w.refused(ctx, EndpointDownload, err, false)
		return fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(sp.f, h), io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return fmt.Errorf("download: after %d bytes: %w", n, err)
	}
	if n > maxImageBytes {
		return fmt.Errorf("download: larger than %d bytes", maxImageBytes)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("download: truncated: %d of %d bytes", n, resp.ContentLength)
	}
	if err := sp.f.Sync(); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	sp.url, sp.size, sp.sum = url, n, hex.EncodeToString(h.Sum(nil))
	return nil
}

// verifyImage decodes the whole spooled image: a truncated or corrupt file fails here, before it
// can be published. It returns the format it decoded as.
func verifyImage(f *os.File, want string) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var head [16]byte
	n, _ := io.ReadFull(f, head[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	_, format, err := image.Decode(f)
	if err != nil {
		return "", fmt.Errorf("downloaded image does not decode as %s (starts %q): %w", want, bytes.ToValidUTF8(head[:n], []byte("?")), err)
	}
	return format, nil
}
