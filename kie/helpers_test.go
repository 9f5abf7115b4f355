package kie_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/kontextq/kontextq/kie"
)

const testKey = "sk-test-7f3a9c2e51b84d06"

// reply is what the fake server answers next.
type reply struct {
	status int
	body   string
	ctype  string
	header http.Header
}

// seen is one request as the fake server received it.
type seen struct {
	method, path, rawQuery string
	header                 http.Header
	body                   []byte
	contentLength          int64
}

// fake is a small Kie stand-in for unit tests: API endpoints are mounted under /kie-api and
// upload endpoints under /kie-upload, so a request sent to the wrong host or built with an
// absolute path lands on neither and fails loudly.
type fake struct {
	srv *httptest.Server

	mu       sync.Mutex
	next     reply
	requests []seen
}

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{next: reply{status: 200, body: `{"code":200,"msg":"success","data":null}`}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body, r.ContentLength})
	rp := f.next
	f.mu.Unlock()
	for k, vs := range rp.header {
		w.Header()[k] = vs
	}
	ct := rp.ctype
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(rp.status)
	_, _ = io.WriteString(w, rp.body)
}

func (f *fake) answer(rp reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = rp
}

func (f *fake) last(t *testing.T) seen {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("the server received no request")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// client returns a client for the fake with the test key.
func (f *fake) client(t *testing.T) *kie.Client {
	t.Helper()
	return f.clientWith(t, kie.Options{APIKey: testKey})
}

func (f *fake) clientWith(t *testing.T, o kie.Options) *kie.Client {
	t.Helper()
	o.BaseURL = f.srv.URL + "/kie-api"
	o.UploadURL = f.srv.URL + "/kie-upload"
	c, err := kie.New(o)
	if err != nil {
		t.Fatalf("kie.New: %v", err)
	}
	return c
}

// envelope renders a Kie envelope; data "" is null.
func envelope(code int, msg, data string) string {
	if data == "" {
		data = "null"
	}
	m, _ := json.Marshal(msg)
	return fmt.Sprintf(`{"code":%d,"msg":%s,"data":%s}`, code, m, data)
}

// pngBytes is a small real PNG image.
func pngBytes(t testing.TB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 3))
	for x := 0; x < 4; x++ {
		img.Set(x, 1, color.RGBA{R: 200, A: 255})
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// method is one client call, for tests that run every method the same way.
type method struct {
	name     string
	path     string // below the mount
	upload   bool   // on the upload host
	fetch    bool   // Fetch: not a JSON API call
	call     func(ctx context.Context, c *kie.Client, srvURL string) error
	okBody   string // a successful answer
	okCtype  string
	checkOut func(t *testing.T, c *kie.Client, srvURL string) // calls again and checks the decoded value
}

const uploadOK = `{"success":true,"code":200,"msg":"File uploaded successfully","data":{"fileName":"in.png","filePath":"kontextq/in.png","downloadUrl":"https://files.example/kontextq/in.png","fileSize":1234,"mimeType":"image/png","uploadedAt":"2025-06-01T10:00:00Z"}}`

func methods(t *testing.T) []method {
	img := pngBytes(t)
	return []method{
		{
			name: "Generate", path: "/kie-api/api/v1/flux/kontext/generate",
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.Generate(ctx, kie.GenerateRequest{Prompt: "a red fox"})
				return err
			},
			okBody: envelope(200, "success", `{"taskId":"task-42"}`),
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				id, err := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "a red fox"})
				if err != nil || id != "task-42" {
					t.Fatalf("Generate = %q, %v; want task-42", id, err)
				}
			},
		},
		{
			name: "RecordInfo", path: "/kie-api/api/v1/flux/kontext/record-info",
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.RecordInfo(ctx, "task-42")
				return err
			},
			okBody: envelope(200, "success", `{"taskId":"task-42","paramJson":"{\"prompt\":\"a red fox\"}","createTime":"2025-06-01 10:00:00","completeTime":"2025-06-01 10:00:12","response":{"resultImageUrl":"https://files.example/r.png","originImageUrl":"null"},"successFlag":1,"errorCode":null,"errorMessage":""}`),
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				r, err := c.RecordInfo(context.Background(), "task-42")
				if err != nil {
					t.Fatal(err)
				}
				if r.SuccessFlag != kie.Succeeded || r.ResultImageURL != "https://files.example/r.png" || r.OriginImageURL != "" ||
					r.CompleteTime.Sub(r.CreateTime) != 12e9 {
					t.Fatalf("RecordInfo = %+v", r)
				}
			},
		},
		{
			name: "Credits", path: "/kie-api/api/v1/chat/credit",
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.Credits(ctx)
				return err
			},
			okBody: envelope(200, "success", `87.5`),
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				v, err := c.Credits(context.Background())
				if err != nil || v != 87.5 {
					t.Fatalf("Credits = %v, %v; want 87.5", v, err)
				}
			},
		},
		{
			name: "DownloadURL", path: "/kie-api/api/v1/common/download-url",
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.DownloadURL(ctx, "https://files.example/r.png")
				return err
			},
			okBody: envelope(200, "success", `"https://dl.example/r.png?sig=abc"`),
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				u, err := c.DownloadURL(context.Background(), "https://files.example/r.png")
				if err != nil || u != "https://dl.example/r.png?sig=abc" {
					t.Fatalf("DownloadURL = %q, %v", u, err)
				}
			},
		},
		{
			name: "UploadStream", path: "/kie-upload/api/file-stream-upload", upload: true,
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.UploadStream(ctx, bytes.NewReader(img), "in.png", "kontextq")
				return err
			},
			okBody: uploadOK,
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				checkUploaded(t)(c.UploadStream(context.Background(), bytes.NewReader(img), "in.png", "kontextq"))
			},
		},
		{
			name: "UploadBase64", path: "/kie-upload/api/file-base64-upload", upload: true,
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.UploadBase64(ctx, img, "in.png", "kontextq")
				return err
			},
			okBody: uploadOK,
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				checkUploaded(t)(c.UploadBase64(context.Background(), img, "in.png", "kontextq"))
			},
		},
		{
			name: "UploadURL", path: "/kie-upload/api/file-url-upload", upload: true,
			call: func(ctx context.Context, c *kie.Client, _ string) error {
				_, err := c.UploadURL(ctx, "https://example.com/in.png", "in.png", "kontextq")
				return err
			},
			okBody: uploadOK,
			checkOut: func(t *testing.T, c *kie.Client, _ string) {
				checkUploaded(t)(c.UploadURL(context.Background(), "https://example.com/in.png", "in.png", "kontextq"))
			},
		},
		{
			name: "Fetch", path: "/files/r.png", fetch: true,
			call: func(ctx context.Context, c *kie.Client, srvURL string) error {
				resp, err := c.Fetch(ctx, srvURL+"/files/r.png")
				if err == nil {
					resp.Body.Close()
				}
				return err
			},
			okBody: string(img), okCtype: "image/png",
			checkOut: func(t *testing.T, c *kie.Client, srvURL string) {
				resp, err := c.Fetch(context.Background(), srvURL+"/files/r.png")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if _, err := png.Decode(resp.Body); err != nil {
					t.Fatalf("fetched image does not decode: %v", err)
				}
			},
		},
	}
}

func checkUploaded(t *testing.T) func(*kie.UploadedFile, error) {
	return func(f *kie.UploadedFile, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if f.DownloadURL != "https://files.example/kontextq/in.png" || f.FileSize != 1234 || f.MimeType != "image/png" ||
			f.FileName != "in.png" || f.FilePath != "kontextq/in.png" || f.UploadedAt.IsZero() {
			t.Fatalf("uploaded file = %+v", f)
		}
	}
}
