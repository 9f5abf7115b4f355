package kiesim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestImagesMatchTheRequest(t *testing.T) {
	f := setup(t, Options{GenerateLimit: -1})
	shas := map[string]string{}
	for _, format := range []string{"jpeg", "png"} {
		for ratio, wh := range aspectRatios {
			id := f.submit(map[string]any{"prompt": "a", "aspectRatio": ratio, "outputFormat": format})
			ti := f.finish(id)
			rp := f.get(ti.ResultURL)
			if rp.status != 200 {
				t.Fatalf("%s %s: HTTP %d", ratio, format, rp.status)
			}
			img, got, err := image.Decode(bytes.NewReader(rp.raw))
			if err != nil || got != format {
				t.Fatalf("%s %s: decoded as %q: %v", ratio, format, got, err)
			}
			b := img.Bounds()
			if want, have := float64(wh[0])/float64(wh[1]), float64(b.Dx())/float64(b.Dy()); max(b.Dx(), b.Dy()) != 128 || have/want < 0.98 || have/want > 1.02 {
				t.Fatalf("%s %s: %dx%d", ratio, format, b.Dx(), b.Dy())
			}
			sum := sha256.Sum256(rp.raw)
			if ti.ImageSHA256 != hex.EncodeToString(sum[:]) || ti.ImageSize != len(rp.raw) {
				t.Fatalf("%s %s: TaskInfo says %s/%d, served %x/%d", ratio, format, ti.ImageSHA256, ti.ImageSize, sum, len(rp.raw))
			}
			if again := f.get(ti.ResultURL); !bytes.Equal(again.raw, rp.raw) {
				t.Fatalf("%s %s: a second download differs", ratio, format)
			}
			if origin := f.get(ti.OriginURL); !bytes.Equal(origin.raw, rp.raw) {
				t.Fatalf("%s %s: origin differs from result", ratio, format)
			}
			if other, dup := shas[ti.ImageSHA256]; dup {
				t.Fatalf("tasks %s and %s have the same image", other, id)
			}
			shas[ti.ImageSHA256] = id
		}
	}
	if st := f.srv.Stats(); st.ImagesServed != 3*len(shas) {
		t.Fatalf("ImagesServed %d, want %d", st.ImagesServed, 3*len(shas))
	}
	// The same task renders the same bytes in another simulator with the same seed.
	g := setup(t, Options{GenerateLimit: -1})
	first := f.srv.Tasks()[0]
	id := g.submit(map[string]any{"prompt": "a", "aspectRatio": first.Request.AspectRatio, "outputFormat": first.OutputFormat})
	if ti := g.finish(id); ti.TaskID != first.TaskID || ti.ImageSHA256 != first.ImageSHA256 {
		t.Fatalf("same seed, same first task: %s/%s vs %s/%s", ti.TaskID, ti.ImageSHA256, first.TaskID, first.ImageSHA256)
	}
}

func TestFileExpiry(t *testing.T) {
	f := setup(t, Options{ResultTTL: time.Hour})
	id := f.submit(prompt("a"))
	early := f.get(f.srv.URL + "/files/result/" + id + ".jpg")
	if early.status != 404 {
		t.Fatalf("result before completion: HTTP %d", early.status)
	}
	ti := f.finish(id)
	at := func(d time.Duration) { f.clock.Advance(ti.CompleteTime.Add(d).Sub(f.clock.Now())) }
	status := func(url string) int { return f.get(url).status }

	at(9 * time.Minute)
	if status(ti.OriginURL) != 200 || status(ti.ResultURL) != 200 {
		t.Fatal("files missing 9 minutes after completion")
	}
	rp := f.postJSON(f.srv.APIURL+pathDownloadURL, map[string]string{"url": ti.ResultURL})
	var direct string
	if err := json.Unmarshal(rp.env.Data, &direct); err != nil || rp.env.Code != 200 {
		t.Fatalf("download-url: %s", rp.raw)
	}
	at(10 * time.Minute)
	if status(ti.OriginURL) != 404 || status(ti.ResultURL) != 200 {
		t.Fatal("at 10 minutes the origin URL must be gone and the result still there")
	}
	if rp := f.get(direct); rp.status != 200 || rp.raw == nil {
		t.Fatalf("direct link: HTTP %d", rp.status)
	}
	at(29*time.Minute - time.Second)
	if status(direct) != 200 {
		t.Fatal("direct link gone before 20 minutes")
	}
	at(29 * time.Minute)
	if status(direct) != 404 {
		t.Fatal("direct link alive after 20 minutes")
	}
	at(time.Hour - time.Second)
	if status(ti.ResultURL) != 200 {
		t.Fatal("result gone before ResultTTL")
	}
	at(time.Hour)
	if status(ti.ResultURL) != 404 {
		t.Fatal("result alive at ResultTTL")
	}

	for _, url := range []string{"https://example.com/x.jpg", f.srv.URL + "/files/result/nope.jpg", f.srv.URL + "/elsewhere"} {
		if rp := f.postJSON(f.srv.APIURL+pathDownloadURL, map[string]string{"url": url}); rp.env.Code != 422 {
			t.Errorf("download-url for %s: code %d, want 422", url, rp.env.Code)
		}
	}
}

func TestDownloadFaults(t *testing.T) {
	t.Run("truncated", func(t *testing.T) {
		f := setup(t, Options{TruncateRate: 1})
		ti := f.finish(f.submit(prompt("a")))
		req, _ := http.NewRequest(http.MethodGet, ti.ResultURL, nil)
		req.Header.Set("User-Agent", "kontextq-test/1")
		resp, err := f.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || resp.ContentLength != int64(ti.ImageSize) || len(got) >= ti.ImageSize {
			t.Fatalf("read %d of announced %d bytes, err %v; want a short read", len(got), resp.ContentLength, err)
		}
		if st := f.srv.Stats(); st.DownloadsTruncated != 1 || st.ImagesServed != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("server errors", func(t *testing.T) {
		f := setup(t, Options{DownloadErrorRate: 1})
		ti := f.finish(f.submit(prompt("a")))
		seen := map[int]bool{}
		for range 20 {
			seen[f.get(ti.ResultURL).status] = true
		}
		if len(seen) != 2 || !seen[500] || !seen[503] {
			t.Fatalf("statuses %v, want 500 and 503", seen)
		}
	})
	t.Run("delay", func(t *testing.T) {
		f := setup(t, Options{DownloadDelay: 150 * time.Millisecond})
		ti := f.finish(f.submit(prompt("a")))
		start := time.Now()
		if rp := f.get(ti.ResultURL); rp.status != 200 || time.Since(start) < 150*time.Millisecond {
			t.Fatalf("HTTP %d after %s", rp.status, time.Since(start))
		}
	})
	t.Run("user agent", func(t *testing.T) {
		f := setup(t, Options{})
		ti := f.finish(f.submit(prompt("a")))
		rp := f.request(http.MethodGet, ti.ResultURL, nil, "", func(r *http.Request) { r.Header.Del("User-Agent") })
		if rp.status != 403 || string(rp.raw) != "error code: 1010" {
			t.Fatalf("HTTP %d %q", rp.status, rp.raw)
		}
	})
}

// pngOf encodes a w x h image for uploads.
func pngOf(t *testing.T, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.NRGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type uploaded struct {
	FileName    string `json:"fileName"`
	FilePath    string `json:"filePath"`
	DownloadURL string `json:"downloadUrl"`
	FileSize    int    `json:"fileSize"`
	MimeType    string `json:"mimeType"`
	UploadedAt  string `json:"uploadedAt"`
}

func decodeUpload(t *testing.T, rp reply) uploaded {
	t.Helper()
	var u uploaded
	if rp.env.Code != 200 || rp.env.Success == nil || !*rp.env.Success {
		t.Fatalf("upload failed: HTTP %d %s", rp.status, rp.raw)
	}
	if err := json.Unmarshal(rp.env.Data, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

func (f *fixture) streamUpload(base string, data []byte, fields map[string]string) reply {
	f.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "in.png")
	fw.Write(data)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	mw.Close()
	return f.request(http.MethodPost, base+pathStreamUpload, body.Bytes(), mw.FormDataContentType(), nil)
}

func TestUploads(t *testing.T) {
	f := setup(t, Options{})
	img := pngOf(t, 60, 80)

	stream := decodeUpload(t, f.streamUpload(f.srv.UploadURL, img, map[string]string{"uploadPath": "jobs/b1", "fileName": "in.png"}))
	if stream.FilePath != "jobs/b1/in.png" || stream.FileSize != len(img) || stream.MimeType != "image/png" {
		t.Fatalf("stream upload: %+v", stream)
	}
	if _, err := time.Parse(time.RFC3339, stream.UploadedAt); err != nil {
		t.Fatalf("uploadedAt %q: %v", stream.UploadedAt, err)
	}
	if rp := f.get(stream.DownloadURL); !bytes.Equal(rp.raw, img) {
		t.Fatalf("download of the upload: HTTP %d, %d bytes", rp.status, len(rp.raw))
	}

	plain := base64.StdEncoding.EncodeToString(img)
	for name, data := range map[string]string{"plain": plain, "data URL": "data:image/png;base64," + plain} {
		u := decodeUpload(t, f.postJSON(f.srv.UploadURL+pathBase64Upload, map[string]string{"base64Data": data, "uploadPath": "b64"}))
		if rp := f.get(u.DownloadURL); !bytes.Equal(rp.raw, img) || u.FileName == "" {
			t.Fatalf("base64 upload (%s): %+v", name, u)
		}
	}
	if rp := f.postJSON(f.srv.UploadURL+pathBase64Upload, map[string]string{"base64Data": "!!", "uploadPath": "b64"}); rp.env.Code != 400 {
		t.Fatalf("bad base64: code %d", rp.env.Code)
	}
	if rp := f.streamUpload(f.srv.UploadURL, img, nil); rp.env.Code != 400 || *rp.env.Success {
		t.Fatalf("missing uploadPath: %s", rp.raw)
	}

	// The URL upload fetches loopback servers and the simulator's own files, nothing else.
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(img) }))
	defer remote.Close()
	fromURL := decodeUpload(t, f.postJSON(f.srv.UploadURL+pathURLUpload, map[string]string{"fileUrl": remote.URL + "/pic.png", "uploadPath": "u"}))
	if fromURL.FileName != "pic.png" || fromURL.FileSize != len(img) {
		t.Fatalf("url upload: %+v", fromURL)
	}
	again := decodeUpload(t, f.postJSON(f.srv.UploadURL+pathURLUpload, map[string]string{"fileUrl": stream.DownloadURL, "uploadPath": "u", "fileName": "copy.png"}))
	if rp := f.get(again.DownloadURL); !bytes.Equal(rp.raw, img) {
		t.Fatal("url upload of an own file differs")
	}
	if rp := f.postJSON(f.srv.UploadURL+pathURLUpload, map[string]string{"fileUrl": "https://example.com/a.png", "uploadPath": "u"}); rp.env.Code != 400 {
		t.Fatalf("url upload from the internet: code %d, want 400", rp.env.Code)
	}

	// Same path: the second upload replaces the first.
	other := pngOf(t, 10, 10)
	decodeUpload(t, f.streamUpload(f.srv.UploadURL, other, map[string]string{"uploadPath": "jobs/b1", "fileName": "in.png"}))
	if rp := f.get(stream.DownloadURL); !bytes.Equal(rp.raw, other) {
		t.Fatal("an upload to the same path did not replace the file")
	}
	if st := f.srv.Stats(); st.Uploads != 6 {
		t.Fatalf("Uploads %d, want 6", st.Uploads)
	}
}

func TestHostsAreSeparate(t *testing.T) {
	f := setup(t, Options{})
	img := pngOf(t, 4, 4)
	for name, rp := range map[string]reply{
		"upload on the API host":      f.streamUpload(f.srv.APIURL, img, map[string]string{"uploadPath": "x"}),
		"upload at the root":          f.streamUpload(f.srv.URL, img, map[string]string{"uploadPath": "x"}),
		"generate on the upload host": f.postJSON(f.srv.UploadURL+pathGenerate, prompt("a")),
		"generate at the root":        f.postJSON(f.srv.URL+pathGenerate, prompt("a")),
	} {
		if rp.status != 404 {
			t.Errorf("%s: HTTP %d, want 404", name, rp.status)
		}
	}

	// The standalone handler serves both at Kie's real paths.
	root := httptest.NewServer(New(Options{}).Handler())
	defer root.Close()
	if u := decodeUpload(t, f.streamUpload(root.URL, img, map[string]string{"uploadPath": "x"})); !strings.HasPrefix(u.DownloadURL, root.URL+"/files/") {
		t.Fatalf("root upload links to %s, not to the server it came from", u.DownloadURL)
	}
	if rp := f.postJSON(root.URL+pathGenerate, prompt("a")); rp.env.Code != 200 {
		t.Fatalf("root generate: %s", rp.raw)
	}
}

func TestEditWithUpload(t *testing.T) {
	f := setup(t, Options{UploadTTL: time.Hour})
	u := decodeUpload(t, f.streamUpload(f.srv.UploadURL, pngOf(t, 60, 80), map[string]string{"uploadPath": "in", "fileName": "portrait.png"}))

	// Without aspectRatio an edit keeps the input's ratio (3:4 here).
	ti := f.finish(f.submit(map[string]any{"prompt": "make it blue", "inputImage": u.DownloadURL}))
	if !ti.IsEdit || ti.Width != 96 || ti.Height != 128 {
		t.Fatalf("edit of a 60x80 image: %dx%d", ti.Width, ti.Height)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(f.get(ti.ResultURL).raw))
	if err != nil || cfg.Width != 96 || cfg.Height != 128 {
		t.Fatalf("served edit: %+v %v", cfg, err)
	}
	ti = f.finish(f.submit(map[string]any{"prompt": "wide", "inputImage": u.DownloadURL, "aspectRatio": "16:9"}))
	if ti.Width != 128 || ti.Height != 72 {
		t.Fatalf("edit with 16:9: %dx%d", ti.Width, ti.Height)
	}
	// An image Kie cannot read the ratio of comes back square.
	if ti := f.finish(f.submit(map[string]any{"prompt": "x", "inputImage": "https://example.com/a.png"})); ti.Width != ti.Height {
		t.Fatalf("edit of a foreign image: %dx%d", ti.Width, ti.Height)
	}

	if rp := f.generate(map[string]any{"prompt": "x", "inputImage": f.srv.URL + "/files/upload/in/missing.png"}); rp.env.Code != 422 {
		t.Fatalf("edit of a missing upload: code %d", rp.env.Code)
	}
	f.clock.Advance(time.Hour)
	if rp := f.generate(map[string]any{"prompt": "x", "inputImage": u.DownloadURL}); rp.env.Code != 422 {
		t.Fatalf("edit of an expired upload: code %d", rp.env.Code)
	}
	if rp := f.get(u.DownloadURL); rp.status != 404 {
		t.Fatalf("expired upload: HTTP %d", rp.status)
	}
}
