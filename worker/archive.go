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
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

// maxImageBytes caps one download; Kie's images are a few MB.
const maxImageBytes = 256 << 20

// queueArchive enqueues the archive task of a generated job, due before its result expires.
func (w *Worker) queueArchive(ctx context.Context, j *jobs.Job) error {
	t := asynq.NewTask(jobs.TypeArchive, jobs.EncodePayload(jobs.Payload{Ref: j.Ref}))
	opts := []asynq.Option{asynq.MaxRetry(30), asynq.Timeout(5 * time.Minute)}
	if !j.ExpiresAt.IsZero() && j.ExpiresAt.After(w.o.Now().Add(time.Minute)) {
		opts = append(opts, asynq.Deadline(j.ExpiresAt))
	}
	return w.enqueueUnique(ctx, t, w.queues.Archive, "archive:"+j.Ref.String(), opts...)
}

func (w *Worker) handleArchive(ctx context.Context, t *asynq.Task) error {
	var p jobs.Payload
	if err := jobs.DecodePayload(t.Payload(), &p); err != nil {
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	j, err := w.ledger.Get(ctx, p.Ref)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil
	}
	if err != nil {
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
	if err != nil {
		_ = w.ledger.SetError(ctx, j.Ref, "archive: "+err.Error())
		if lastAttempt(ctx) {
			w.log.Error("archiving failed on its last attempt; the sweeper will try again", "job", j.Ref.String(), "expires", j.ExpiresAt, "err", err)
		}
	}
	return err
}

// archive downloads, verifies and stores one image, then its sidecar, then marks the job.
func (w *Worker) archive(ctx context.Context, j *jobs.Job) error {
	spool, err := os.CreateTemp(w.o.SpoolDir, "kontextq-*.part")
	if err != nil {
		return fmt.Errorf("spool file: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()

	src, size, sum, err := w.download(ctx, j, spool)
	if err != nil {
		return err
	}
	format, err := verifyImage(spool, j.Spec.Format())
	if err != nil {
		return err
	}
	if format != j.Spec.Format() {
		w.log.Warn("result format differs from the requested one; archived as what it is", "job", j.Ref.String(), "requested", j.Spec.Format(), "got", format)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	key := archive.ImageKey(j.Batch, j.ID, format)
	if err := w.o.Store.Put(ctx, key, spool, archive.Info{Size: size, SHA256: sum, ContentType: "image/" + format}); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	req, _ := json.Marshal(j.Spec.Request(j.Spec.InputImage, ""))
	now := w.o.Now()
	sc := archive.Sidecar{
		ID: j.ID, Batch: j.Batch, TaskID: j.TaskID, Request: req, SourceURL: src, SHA256: sum, Bytes: size,
		Format: format, CreateTime: j.CreateTime, CompleteTime: j.CompleteTime, ArchivedAt: now,
		ExpiresAt: j.ExpiresAt, OriginURL: j.OriginURL, Attempts: j.Submissions,
	}
	if err := archive.PutSidecar(ctx, w.o.Store, sc); err != nil {
		return fmt.Errorf("storing sidecar of %s: %w", j.Ref, err)
	}
	ok, err := w.ledger.RecordArchived(ctx, j.Ref, jobs.ArchiveRecord{Location: w.o.Store.Location(key), SHA256: sum, Bytes: size, At: now})
	if err != nil {
		return err
	}
	if ok {
		w.o.Observer.Archived(size)
		w.log.Debug("archived", "job", j.Ref.String(), "bytes", size, "location", w.o.Store.Location(key))
	}
	return nil
}

// download streams the job's result into spool, hashing it. When the result URL is refused or gone
// it asks Kie for a fresh direct link once. It reports the URL it read.
func (w *Worker) download(ctx context.Context, j *jobs.Job, spool *os.File) (string, int64, string, error) {
	url := j.ResultURL
	resp, err := w.o.Kie.Fetch(ctx, url)
	if err != nil && (kie.IsNotFound(err) || httpStatus(err) == 403 || httpStatus(err) == 410) {
		fresh, derr := w.o.Kie.DownloadURL(ctx, url)
		if derr != nil {
			if w.o.Now().After(j.ExpiresAt) && (kie.IsNotFound(derr) || kie.IsInvalidRequest(derr)) {
				msg := fmt.Sprintf("result gone before it was archived: %v; refresh: %v", err, derr)
				ok, ferr := w.ledger.Fail(ctx, j.Ref, []jobs.State{jobs.Generated}, "", jobs.Expired, msg)
				if ferr != nil {
					return "", 0, "", ferr
				}
				if ok {
					w.o.Observer.Failed(jobs.Expired)
				}
				return "", 0, "", fmt.Errorf("%w: %s", asynq.SkipRetry, msg)
			}
			return "", 0, "", fmt.Errorf("download %s: %w (refresh: %v)", j.Ref, err, derr)
		}
		url = fresh
		resp, err = w.o.Kie.Fetch(ctx, url)
	}
	if err != nil {
		return "", 0, "", fmt.Errorf("download %s: %w", j.Ref, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(spool, h), io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return "", 0, "", fmt.Errorf("download %s: after %d bytes: %w", j.Ref, n, err)
	}
	if n > maxImageBytes {
		return "", 0, "", fmt.Errorf("download %s: larger than %d bytes", j.Ref, maxImageBytes)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return "", 0, "", fmt.Errorf("download %s: truncated: %d of %d bytes", j.Ref, n, resp.ContentLength)
	}
	if err := spool.Sync(); err != nil {
		return "", 0, "", err
	}
	return url, n, hex.EncodeToString(h.Sum(nil)), nil
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

func httpStatus(err error) int {
	var ke *kie.Error
	if errors.As(err, &ke) {
		return ke.HTTPStatus
	}
	return 0
}
