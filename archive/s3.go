package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
)

const (
	// partSize is S3's smallest allowed part. Objects below it go up in one PutObject; larger
	// ones as a multipart upload, so a Put holds about two parts in memory whatever the size.
	partSize = 5 << 20
	// abortTimeout bounds the AbortMultipartUpload sent after a failed or cancelled Put. It
	// runs on a fresh context because the Put's own is usually the one that was cancelled.
	abortTimeout = 30 * time.Second
	// metaSHA256 is the object metadata key holding the content's sha256, so Stat knows it
	// without reading the object.
	metaSHA256 = "sha256"
)

// S3 is a Store in an S3-compatible bucket (AWS S3, MinIO, R2, ...), optionally under a key
// prefix. Put streams through a multipart upload that is completed only after the content
// was verified, and aborted otherwise; S3 never shows an uncompleted upload as an object.
type S3 struct {
	bucket *blob.Bucket
	client *s3.Client
	name   string
	prefix string // "" or ending in "/"
}

var _ Store = (*S3)(nil)

// OpenS3 opens an S3 store from a URL such as
// "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true".
// The path, if any, is the key prefix; the query takes whatever gocloud's s3blob URL opener
// accepts (endpoint, region, use_path_style, request_checksum_calculation, ...). Credentials
// come from the standard AWS environment and files. It fails when the bucket cannot be
// listed, so a bad configuration shows at start rather than at the first image.
func OpenS3(ctx context.Context, location string) (*S3, error) {
	u, err := url.Parse(location)
	if err != nil {
		return nil, fmt.Errorf("archive: open s3 store: %w", err)
	}
	where := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("archive: open s3 store %s: want s3://bucket[/prefix]", where)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := ValidKey(prefix); err != nil {
			return nil, fmt.Errorf("archive: open s3 store %s: prefix: %w", where, err)
		}
		prefix += "/"
	}
	bu := *u
	bu.Path, bu.RawPath = "", ""
	opener := &s3blob.URLOpener{}
	b, err := opener.OpenBucketURL(ctx, &bu)
	if err != nil {
		return nil, fmt.Errorf("archive: open s3 store %s: %w", where, err)
	}
	var client *s3.Client
	if !b.As(&client) {
		_ = b.Close()
		return nil, fmt.Errorf("archive: open s3 store %s: no S3 client behind the bucket", where)
	}
	ok, err := b.IsAccessible(ctx)
	if err == nil && !ok {
		err = errors.New("bucket does not exist")
	}
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("archive: open s3 store %s: %w", where, err)
	}
	return &S3{bucket: b, client: client, name: u.Host, prefix: prefix}, nil
}

// Location returns "s3://bucket/prefix/key".
func (s *S3) Location(key string) string { return "s3://" + s.name + "/" + s.prefix + key }

// Close releases the bucket.
func (s *S3) Close() error {
	if err := s.bucket.Close(); err != nil {
		return fmt.Errorf("archive: close s3 store: %w", err)
	}
	return nil
}

// writerOnly hides blob.Writer's ReadFrom from io.Copy: that path may hand the source to the
// uploader directly, which would complete the upload at EOF before Put could decide.
type writerOnly struct{ io.Writer }

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, want Info) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("archive put %s: %w", s.Location(key), err)
		}
	}()
	if err := ValidKey(key); err != nil {
		return err
	}
	want, err = checkWant(want)
	if err != nil {
		return err
	}
	ct := want.ContentType
	if ct == "" {
		ct = contentTypeFor(key)
	}
	// Cancelling wctx before Close is how gocloud aborts a write: the upload fails instead
	// of completing, and the transfer manager aborts the multipart upload.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.bucket.NewWriter(wctx, s.prefix+key, &blob.WriterOptions{
		ContentType: ct,
		Metadata:    map[string]string{metaSHA256: want.SHA256},
		BeforeWrite: s.beforeWrite,
	})
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	v := newVerifier(ctx, r, want)
	_, err = io.Copy(writerOnly{w}, v)
	if err == nil {
		err = v.done()
	}
	if err != nil {
		cancel()
		_ = w.Close() // reports the cancellation we caused; err says why
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("complete upload: %w", err)
	}
	return nil
}

// beforeWrite swaps in a transfer manager configured for streaming. s3blob's own reads the
// first 16 MiB into memory before deciding between single and multipart upload, and keeps
// up to six parts in flight; this one holds about two 5 MiB parts.
func (s *S3) beforeWrite(as func(any) bool) error {
	var tm *transfermanager.Client
	if !as(&tm) || tm == nil {
		return errors.New("s3 writer exposes no transfer manager")
	}
	*tm = *transfermanager.New(s.client, func(o *transfermanager.Options) {
		o.PartSizeBytes = partSize
		o.MultipartUploadThreshold = partSize
		o.Concurrency = 1
		o.FailTimeout = abortTimeout
		// The transfer manager's checksum setting overrides the client's; keep the one the
		// URL chose (third-party stores often need when_required).
		o.RequestChecksumCalculation = s.client.Options().RequestChecksumCalculation
	})
	return nil
}

func isNotFound(err error) bool { return gcerrors.Code(err) == gcerrors.NotFound }

// Stat implements Store. SHA256 comes from the object's metadata ("" for an object that
// was not written by this store).
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, fmt.Errorf("archive stat %s: %w", key, err)
	}
	a, err := s.bucket.Attributes(ctx, s.prefix+key)
	if isNotFound(err) {
		return Info{}, fmt.Errorf("archive stat %s: %w", s.Location(key), ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("archive stat %s: %w", s.Location(key), err)
	}
	return Info{Size: a.Size, SHA256: a.Metadata[metaSHA256], ContentType: a.ContentType, ModTime: a.ModTime}, nil
}

// Open implements Store.
func (s *S3) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, fmt.Errorf("archive open %s: %w", key, err)
	}
	rd, err := s.bucket.NewReader(ctx, s.prefix+key, nil)
	if isNotFound(err) {
		return nil, fmt.Errorf("archive open %s: %w", s.Location(key), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("archive open %s: %w", s.Location(key), err)
	}
	return rd, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	if err := s.bucket.Delete(ctx, s.prefix+key); err != nil && !isNotFound(err) {
		return fmt.Errorf("archive delete %s: %w", s.Location(key), err)
	}
	return nil
}

// List implements Store. Objects whose names are not valid keys (put there by other tools)
// are skipped: no other method of the store could address them.
func (s *S3) List(ctx context.Context, prefix string, fn func(key string, info Info) error) error {
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("archive list %s: %w", prefix, err)
	}
	it := s.bucket.List(&blob.ListOptions{Prefix: s.prefix + prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive list %s: %w", s.Location(prefix), err)
		}
		key := strings.TrimPrefix(obj.Key, s.prefix)
		if obj.IsDir || ValidKey(key) != nil {
			continue
		}
		if err := fn(key, Info{Size: obj.Size, ModTime: obj.ModTime}); err != nil {
			return fmt.Errorf("archive list %s: %w", s.Location(prefix), err)
		}
	}
}
