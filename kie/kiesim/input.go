package kiesim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	_ "golang.org/x/image/webp" // inputs Kie accepts besides JPEG and PNG
)

// An edit's input image is read after the generate call has answered, as at Kie, where the
// model's pipeline fetches it: generate only checks that inputImage is an http(s) URL and, for
// the simulator's own files, that the file is still there (422 otherwise). Until the input is
// read the task reports successFlag 0. An input that cannot be fetched (unreachable host, HTTP
// error, timeout, larger than maxInputBytes) or is not an image (JPEG, PNG or WebP, at most
// maxInputPixels) ends the task at once with successFlag 2, errorCode 400 and an errorMessage
// naming the problem. Kie documents neither the code nor the message: 2 ("task creation
// failed") because no generation ever started, and 400 because the fault is the request's, so a
// client does not pay for the same unusable input again; the task is billed like any other
// failed task. A readable input becomes the edit's output (see renderEdit), so an edit visibly
// is an edit of its input.

const (
	// maxInputBytes bounds a fetched input image.
	maxInputBytes = 20 << 20
	// maxInputPixels bounds its decoded size, so a small file cannot expand into gigabytes.
	maxInputPixels = 40_000_000
	// maxInputFetches bounds the input fetches in flight: a batch of edits must not open
	// thousands of connections at once.
	maxInputFetches = 8
	// defaultFetchTimeout is Kie's documented download timeout for URL uploads, taken for
	// inputImage too.
	defaultFetchTimeout = 30 * time.Second
)

// errInputFailed prefixes every reason an input could not be used.
var errInputFailed = errors.New("inputImage could not be used")

// errClosed fails the inputs still to be read when the simulator closes.
var errClosed = fmt.Errorf("%w: the simulator was closed", errInputFailed)

// editInput is where an edit's input comes from, captured when the task is created: bytes of an
// upload, another task's image, or a URL to fetch.
type editInput struct {
	data []byte // an upload's bytes
	task *task  // a result or origin image of the simulator
	url  string // anything else
}

// inputLocked resolves an edit's inputImage at submit. own reports a link to the simulator's own
// files; found is false when such a link no longer serves anything (Kie checks its own storage
// at once).
func (s *Sim) inputLocked(raw, base string, now time.Time) (in editInput, own, found bool) {
	f, own := s.lookupLocked(raw, base, now)
	switch {
	case !own:
		return editInput{url: raw}, false, true
	case f == nil:
		return editInput{}, true, false
	case f.upload != nil:
		return editInput{data: f.upload.data}, true, true
	default:
		return editInput{task: f.task}, true, true
	}
}

// readInput reads t's input and settles the task: its size (when no aspectRatio was asked for),
// its image, or its failure. It runs on its own goroutine, counted in s.wg.
func (s *Sim) readInput(t *task, in editInput) {
	defer s.wg.Done()
	select {
	case s.fetches <- struct{}{}:
		defer func() { <-s.fetches }()
	case <-s.ctx.Done():
		s.settleInput(t, nil, errClosed)
		return
	}
	data := in.data
	var err error
	switch {
	case in.task != nil:
		data = s.imageOf(in.task)
	case in.url != "":
		data, err = s.fetchInput(s.ctx, in.url)
	}
	if err != nil {
		s.settleInput(t, nil, fmt.Errorf("%w: %v", errInputFailed, err))
		return
	}
	img, err := decodeInput(data)
	if err != nil {
		s.settleInput(t, nil, fmt.Errorf("%w: %v", errInputFailed, err))
		return
	}
	s.settleInput(t, img, nil)
}

// decodeInput decodes an input image, refusing anything that is not one of the formats Kie
// takes or that would decode to more than maxInputPixels.
func decodeInput(data []byte) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || (format != "jpeg" && format != "png" && format != "webp") {
		return nil, fmt.Errorf("not an image (%s; JPEG, PNG or WebP expected)", http.DetectContentType(data))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > maxInputPixels {
		return nil, fmt.Errorf("%s image of %dx%d pixels is larger than %d megapixels", format, cfg.Width, cfg.Height, maxInputPixels/1_000_000)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s image could not be decoded: %v", format, err)
	}
	return img, nil
}

// settleInput records the outcome of reading t's input. A readable input sizes the task from
// its own ratio unless one was asked for, and its image is rendered once, here: it depends on
// bytes the simulator does not keep.
func (s *Sim) settleInput(t *task, img image.Image, err error) {
	var rendered []byte
	w, h := t.width, t.height // written only by settleInputLocked, after this
	if err == nil {
		if t.req.AspectRatio == nil {
			b := img.Bounds()
			w, h = ratioDims([2]int{b.Dx(), b.Dy()}, t.maxSide)
		}
		rendered = renderEdit(img, t.id, w, h, t.format)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleInputLocked(t, rendered, w, h, err)
}

// settleInputLocked ends t's wait for its input. A failure ends the task at the simulator's now
// and brings its first callback forward. A success never completes in the past: a task that a
// poll a moment ago saw generating does not report having finished before that poll.
func (s *Sim) settleInputLocked(t *task, rendered []byte, w, h int, err error) {
	defer close(t.inputDone)
	t.inputPending = false
	now := s.nowLocked()
	if err != nil {
		s.counters.InputsFailed++
		t.flag, t.errCode, t.errMsg = 2, 400, err.Error()
		t.completeAt = now
		if now.Before(t.created) {
			t.completeAt = t.created
		}
		s.rescheduleLocked(t)
		return
	}
	s.counters.InputsRead++
	t.edited, t.width, t.height = rendered, w, h
	if now.After(t.completeAt) {
		t.completeAt = now
		s.rescheduleLocked(t)
	}
}

// rescheduleLocked moves t's first callback to its completion time.
func (s *Sim) rescheduleLocked(t *task) {
	now := s.nowLocked()
	for d := range s.pending {
		if d.task == t && d.attempt == 0 {
			d.due = t.completeAt
			d.timer.Reset(max(d.due.Sub(now), 0))
		}
	}
}

// waitInput blocks until t's input has been read (at once for generations).
func (s *Sim) waitInput(t *task) {
	if t.inputDone == nil {
		return
	}
	<-t.inputDone
}

// fetchInput downloads an input image from a URL that is not one of the simulator's files.
func (s *Sim) fetchInput(ctx context.Context, raw string) ([]byte, error) {
	data, err := s.fetchRemote(ctx, raw, maxInputBytes)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, errors.New("the file is empty")
	}
	return data, nil
}

// fetchRemote GETs raw (at most limit bytes) within the fetch timeout, on the hosts the
// simulator may reach: loopback always, others with Options.RemoteFetch.
func (s *Sim) fetchRemote(ctx context.Context, raw string, limit int64) ([]byte, error) {
	s.mu.Lock()
	timeout, remote := s.o.FetchTimeout, s.o.RemoteFetch
	s.mu.Unlock()
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %v", err)
	}
	if err := reachable(u, remote); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("User-Agent", "kiesim-fetch/1")
	client := *s.client
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("too many redirects")
		}
		return reachable(r.URL, remote)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("no answer within %s", timeout)
		}
		return nil, fmt.Errorf("fetching: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d MB", limit>>20)
	}
	return data, nil
}

// reachable says whether the simulator may fetch u: loopback hosts always; others only when
// remote is on, so that a test never reaches out to the network on its own.
func reachable(u *url.URL, remote bool) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s is not an http(s) URL", u.Redacted())
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); remote || strings.EqualFold(host, "localhost") || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("host %s is not reachable from the simulator", host)
}
