package archive_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/archive/archivetest"
)

// The S3 tests talk to gofakes3, a real S3-protocol server over HTTP, run in a child process
// (this test binary, re-executed). In-process it would keep every uploaded byte in this
// process's heap, and the conformance suite could not tell whether the store streams.
const (
	fakeS3Env    = "KONTEXTQ_ARCHIVE_FAKE_S3"
	fakeS3Bucket = "archive"
)

var fakeS3 struct {
	once     sync.Once
	endpoint string
	err      error
	stdin    io.WriteCloser
	cmd      *exec.Cmd
}

func TestMain(m *testing.M) {
	if os.Getenv(fakeS3Env) != "" {
		serveFakeS3()
		return
	}
	// The store reads credentials the standard AWS way; point every source at fixed test
	// values so nothing from the developer's own AWS setup is used.
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "kontextq-test",
		"AWS_SECRET_ACCESS_KEY":       "kontextq-test-secret",
		"AWS_REGION":                  "us-east-1",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		os.Setenv(k, v)
	}
	os.Unsetenv("AWS_PROFILE")
	os.Unsetenv("AWS_SESSION_TOKEN")
	code := m.Run()
	if fakeS3.cmd != nil {
		_ = fakeS3.stdin.Close()
		_ = fakeS3.cmd.Wait()
	}
	os.Exit(code)
}

// serveFakeS3 is the child: it prints the server's URL and serves until its parent closes
// stdin (or dies).
func serveFakeS3() {
	backend := s3mem.New()
	if err := backend.CreateBucket(fakeS3Bucket); err != nil {
		fmt.Fprintln(os.Stderr, "create bucket:", err)
		os.Exit(1)
	}
	srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	fmt.Println(srv.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

func fakeS3Endpoint(t *testing.T) string {
	t.Helper()
	fakeS3.once.Do(func() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fakeS3Env+"=1")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			fakeS3.err = err
			return
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			fakeS3.err = err
			return
		}
		if err := cmd.Start(); err != nil {
			fakeS3.err = err
			return
		}
		fakeS3.cmd, fakeS3.stdin = cmd, stdin
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			fakeS3.err = fmt.Errorf("fake S3 server did not start: %w", err)
			return
		}
		fakeS3.endpoint = strings.TrimSpace(line)
	})
	if fakeS3.err != nil {
		t.Fatal(fakeS3.err)
	}
	return fakeS3.endpoint
}

var s3Prefixes atomic.Int64

// s3Location names a fresh, empty part of the fake bucket.
func s3Location(t *testing.T, bucket string) (location, prefix string) {
	prefix = fmt.Sprintf("t%d", s3Prefixes.Add(1))
	// gofakes3 does not understand the SDK's default streaming checksums; "when_required" is
	// also what MinIO-era third-party stores tend to need.
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1&use_path_style=true"+
		"&request_checksum_calculation=when_required&response_checksum_validation=when_required",
		bucket, prefix, fakeS3Endpoint(t)), prefix
}

func openS3(t *testing.T) archive.Store {
	t.Helper()
	loc, _ := s3Location(t, fakeS3Bucket)
	s, err := archive.Open(context.Background(), loc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestS3Conformance(t *testing.T) {
	if testing.Short() {
		t.Skip("the same suite as the local store, through a fake S3 server: minutes under -race")
	}
	archivetest.Run(t, openS3)
}

// rawS3 is a plain SDK client on the fake server, to look behind the store's back.
func rawS3(t *testing.T) *s3.Client {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(fakeS3Endpoint(t))
		o.UsePathStyle = true
	})
}

func TestS3KeepsChecksumAndLocation(t *testing.T) {
	loc, prefix := s3Location(t, fakeS3Bucket)
	s, err := archive.OpenS3(t.Context(), loc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("png!"), 1000)
	want := infoOf(data)
	key := archive.ImageKey("b1", "job-1", "png")
	if err := s.Put(t.Context(), key, bytes.NewReader(data), want); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if info.SHA256 != want.SHA256 {
		t.Errorf("Stat sha256 %q, want %q kept from the Put", info.SHA256, want.SHA256)
	}
	if info.ContentType != "image/png" {
		t.Errorf("content type %q, want image/png from the key", info.ContentType)
	}
	wantLoc := "s3://archive/" + prefix + "/b1/job-1.png"
	if got := s.Location(key); got != wantLoc {
		t.Errorf("Location = %q, want %q", got, wantLoc)
	}
	out, err := rawS3(t).HeadObject(t.Context(), &s3.HeadObjectInput{
		Bucket: aws.String(fakeS3Bucket), Key: aws.String(prefix + "/b1/job-1.png"),
	})
	if err != nil {
		t.Fatalf("the object is not where Location says: %v", err)
	}
	if got := out.Metadata["sha256"]; got != want.SHA256 {
		t.Errorf("object metadata sha256 = %q, want %q", got, want.SHA256)
	}
}

// A failed Put must not leave a multipart upload behind: S3 bills stored parts of
// uploads nobody completes.
func TestS3AbortsFailedMultipartUploads(t *testing.T) {
	loc, prefix := s3Location(t, fakeS3Bucket)
	s, err := archive.OpenS3(t.Context(), loc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte{7}, 12<<20) // three parts
	bad := infoOf(data)
	bad.Size--
	if err := s.Put(t.Context(), "b1/big.png", bytes.NewReader(data), bad); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("Put: err %v, want ErrCorrupt", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelAfter{r: bytes.NewReader(data), n: 7 << 20, cancel: cancel}
	if err := s.Put(ctx, "b1/big2.png", r, infoOf(data)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: err %v, want context.Canceled", err)
	}
	out, err := rawS3(t).ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{
		Bucket: aws.String(fakeS3Bucket), Prefix: aws.String(prefix + "/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range out.Uploads {
		t.Errorf("multipart upload of %s left behind", aws.ToString(u.Key))
	}
}

// cancelAfter cancels its context once n bytes were read, and keeps serving data.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestS3OpenFailsEarly(t *testing.T) {
	loc, _ := s3Location(t, "no-such-bucket")
	s, err := archive.Open(t.Context(), loc)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a missing bucket succeeded; a bad configuration should show at start")
	}
	if secret := os.Getenv("AWS_SECRET_ACCESS_KEY"); strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), secret) {
		t.Errorf("Open's error shows the secret key: %v", err)
	}
	t.Logf("Open of a missing bucket: %v", err)
}
