package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// InputChecker checks, before jobs are enqueued, that each one's inputImage would reach Kie as
// an image. A local file is checked as the reader checks it (exists, readable, an image within
// MaxInputImageBytes). A URL is asked with HEAD; when HEAD does not show an image (refused, as
// by storage links signed for GET only, or no image Content-Type), the first bytes are fetched
// with a ranged GET and their magic bytes decide. Either way a URL must answer 2xx, be PNG, JPEG
// or WebP, and announce no more than MaxInputImageBytes. The zero value is ready to use.
type InputChecker struct {
	// Client makes the requests. Default: http.DefaultClient's transport, following redirects.
	Client *http.Client
	// Timeout bounds the check of one URL, both requests together. Default 20s.
	Timeout time.Duration
	// UserAgent is sent with every request. Default "kontextq-check/1".
	UserAgent string
}

// sniffBytes is how much of a URL is fetched when HEAD does not tell: enough for
// http.DetectContentType.
const sniffBytes = 512

// imageTypes are the media types of the formats Kie takes, as Content-Type or sniffed.
var imageTypes = []string{"image/png", "image/jpeg", "image/webp"}

// Check reports why input, a spec's inputImage (a URL or a local path), would fail, or nil.
// The error's text is the reason alone, meant to follow "inputImage: ".
func (c *InputChecker) Check(ctx context.Context, input string) error {
	if !looksLikeURL(input) {
		if why := checkInputImage(input, MaxInputImageBytes); why != "" {
			return errors.New(why)
		}
		return nil
	}
	if why := checkInputImage(input, 0); why != "" {
		return errors.New(why)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := c.check(ctx, input)
	if err == nil {
		return nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%s: no answer within %s", quote(input), timeout)
	}
	return fmt.Errorf("%s: %w", quote(input), err)
}

func (c *InputChecker) check(ctx context.Context, u string) error {
	resp, err := c.do(ctx, http.MethodHead, u)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		if err := checkLength(resp); err != nil {
			return err
		}
		if isImageType(resp.Header.Get("Content-Type")) {
			return nil
		}
	}
	// HEAD did not show an image: the first bytes decide.
	resp, err = c.do(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %s", strings.TrimSpace(resp.Status))
	}
	if resp.StatusCode == http.StatusOK { // a 206 announces the range's length, not the file's
		if err := checkLength(resp); err != nil {
			return err
		}
	}
	head := make([]byte, sniffBytes)
	n, err := io.ReadFull(resp.Body, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading: %v", err)
	}
	if n == 0 {
		return errors.New("the file is empty")
	}
	if sniffed := http.DetectContentType(head[:n]); !isImageType(sniffed) {
		declared := resp.Header.Get("Content-Type")
		if declared == "" {
			declared = "none"
		}
		return fmt.Errorf("not an image (Content-Type %s, content looks like %s; want png, jpeg or webp)", declared, sniffed)
	}
	return nil
}

func (c *InputChecker) do(ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("not a valid URL: %v", err)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "kontextq-check/1"
	}
	req.Header.Set("User-Agent", ua)
	if method == http.MethodGet {
		req.Header.Set("Range", "bytes=0-"+strconv.Itoa(sniffBytes-1))
	}
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap() // the cause, without Go's "Head "URL":" prefix repeating the URL
		}
		return nil, fmt.Errorf("cannot be fetched: %v", err)
	}
	return resp, nil
}

// checkLength refuses a file that announces more than MaxInputImageBytes.
func checkLength(resp *http.Response) error {
	if resp.ContentLength > MaxInputImageBytes {
		return fmt.Errorf("is %d bytes; at most %d bytes", resp.ContentLength, MaxInputImageBytes)
	}
	return nil
}

func isImageType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	for _, t := range imageTypes {
		if mt == t {
			return true
		}
	}
	return false
}
