package kiesim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/imagetest"
	"github.com/kontextq/kontextq/kie"
)

// mean is the average colour of r in img.
func mean(img image.Image, r image.Rectangle) (red, green, blue float64) {
	n := 0.0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			red, green, blue = red+float64(cr>>8), green+float64(cg>>8), blue+float64(cb>>8)
			n++
		}
	}
	return red / n, green / n, blue / n
}

// imageHost serves what the test needs as edit inputs on a loopback address.
func imageHost(t *testing.T, files map[string][]byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for path, b := range files {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) { w.Write(b) })
	}
	mux.HandleFunc("/page.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html><body>Sign in to see this picture</body></html>"))
	})
	mux.HandleFunc("/empty.png", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/huge.png", func(w http.ResponseWriter, _ *http.Request) {
		chunk := make([]byte, 1<<20)
		for range maxInputBytes>>20 + 1 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/slow.png", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mux.HandleFunc("/away.png", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://images.example.com/a.png", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestEditIsDrawnFromItsInput(t *testing.T) {
	photo := imagetest.Halves(t, 120, 80)
	host := imageHost(t, map[string][]byte{"/photo.png": photo})
	f := setup(t, Options{GenerateLimit: -1})
	up := decodeUpload(t, f.streamUpload(f.srv.UploadURL, photo, map[string]string{"uploadPath": "in", "fileName": "photo.png"}))

	for _, tt := range []struct {
		name, input, ratio string
		w, h               int
	}{
		{"upload, own ratio", up.DownloadURL, "", 128, 85},
		{"URL on another host, own ratio", host.URL + "/photo.png", "", 128, 85},
		{"upload cropped to 1:1", up.DownloadURL, "1:1", 128, 128},
		{"upload cropped to 21:9", up.DownloadURL, "21:9", 128, 55},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := map[string]any{"prompt": "make it vivid", "inputImage": tt.input, "outputFormat": "png"}
			if tt.ratio != "" {
				req["aspectRatio"] = tt.ratio
			}
			ti := f.finish(f.submit(req))
			if ti.Outcome != kie.Succeeded || ti.Width != tt.w || ti.Height != tt.h {
				t.Fatalf("outcome %d (%d %s), %dx%d; want success, %dx%d", ti.Outcome, ti.ErrorCode, ti.ErrorMessage, ti.Width, ti.Height, tt.w, tt.h)
			}
			rp := f.get(ti.ResultURL)
			sum := sha256.Sum256(rp.raw)
			if rp.status != 200 || ti.ImageSHA256 != hex.EncodeToString(sum[:]) || ti.ImageSize != len(rp.raw) {
				t.Fatalf("HTTP %d; TaskInfo says %s/%d, served %x/%d", rp.status, ti.ImageSHA256, ti.ImageSize, sum, len(rp.raw))
			}
			img, err := png.Decode(bytes.NewReader(rp.raw))
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			if b.Dx() != tt.w || b.Dy() != tt.h {
				t.Fatalf("served %dx%d", b.Dx(), b.Dy())
			}
			// The input shows through: red on the left, blue on the right...
			band := b.Dy() / 3
			lr, _, lb := mean(img, image.Rect(b.Dx()/10, band, b.Dx()/3, 2*band))
			rr, _, rb := mean(img, image.Rect(2*b.Dx()/3, band, 9*b.Dx()/10, 2*band))
			if lr < lb+60 || rb < rr+60 {
				t.Fatalf("the edit does not look like its input: left rgb mean r%.0f b%.0f, right r%.0f b%.0f", lr, lb, rr, rb)
			}
			// ...visibly changed: a frame in one colour across both halves, and a white badge in
			// the bottom-right corner.
			left, right := img.At(0, b.Dy()/2), img.At(b.Dx()-1, b.Dy()/2)
			if left != right {
				t.Fatalf("no frame: the left edge is %v, the right %v", left, right)
			}
			corner := b.Dy() / 5
			white := 0
			for y := b.Dy() - corner; y < b.Dy(); y++ {
				for x := b.Dx() - corner; x < b.Dx(); x++ {
					if r, g, bl, _ := img.At(x, y).RGBA(); r>>8 > 240 && g>>8 > 240 && bl>>8 > 240 {
						white++
					}
				}
			}
			if white < corner*corner/3 {
				t.Fatalf("no badge in the corner: %d of %d pixels white", white, corner*corner)
			}
		})
	}

	// The same edit in another simulator with the same seed has the same bytes; a different
	// input gives different bytes.
	first := f.srv.Tasks()[0]
	g := setup(t, Options{GenerateLimit: -1})
	same := decodeUpload(t, g.streamUpload(g.srv.UploadURL, photo, map[string]string{"uploadPath": "in", "fileName": "photo.png"}))
	if ti := g.finish(g.submit(map[string]any{"prompt": "make it vivid", "inputImage": same.DownloadURL, "outputFormat": "png"})); ti.ImageSHA256 != first.ImageSHA256 {
		t.Fatalf("same seed, same edit: %s vs %s", ti.ImageSHA256, first.ImageSHA256)
	}
	h := setup(t, Options{GenerateLimit: -1})
	other := decodeUpload(t, h.streamUpload(h.srv.UploadURL, imagetest.Halves(t, 80, 120), map[string]string{"uploadPath": "in", "fileName": "photo.png"}))
	if ti := h.finish(h.submit(map[string]any{"prompt": "make it vivid", "inputImage": other.DownloadURL, "outputFormat": "png"})); ti.ImageSHA256 == first.ImageSHA256 {
		t.Fatal("edits of different inputs have the same image")
	}

	// An edit of an edit's result is read from the simulator's own files.
	ti := f.finish(f.submit(map[string]any{"prompt": "again", "inputImage": first.ResultURL}))
	if ti.Outcome != kie.Succeeded || ti.Width != 128 || ti.Height != 85 {
		t.Fatalf("edit of a result: outcome %d %s, %dx%d", ti.Outcome, ti.ErrorMessage, ti.Width, ti.Height)
	}
	if st := f.srv.Stats(); st.InputsRead != 5 || st.InputsFailed != 0 {
		t.Fatalf("InputsRead %d, InputsFailed %d; want 5, 0", st.InputsRead, st.InputsFailed)
	}
}

func TestEditOfUnusableInputFails(t *testing.T) {
	host := imageHost(t, map[string][]byte{"/notes.png": []byte("shopping list: eggs, milk")})
	rc := newReceiver(t)
	f := setup(t, Options{})
	tests := []struct {
		name, url, why string
	}{
		{"missing", host.URL + "/missing.png", "HTTP 404"},
		{"a web page", host.URL + "/page.png", "not an image (text/html"},
		{"text", host.URL + "/notes.png", "not an image (text/plain"},
		{"empty", host.URL + "/empty.png", "empty"},
		{"too large", host.URL + "/huge.png", "larger than 20 MB"},
		{"too slow", host.URL + "/slow.png", "no answer within 300ms"},
		{"redirected off the network", host.URL + "/away.png", "images.example.com is not reachable"},
		{"unreachable host", "https://images.example.com/a.png", "images.example.com is not reachable"},
		{"closed port", "http://127.0.0.1:1/a.png", "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := 10 * time.Second
			if strings.Contains(tt.url, "slow") {
				timeout = 300 * time.Millisecond
			}
			f.srv.Update(func(o *Options) { o.FetchTimeout = timeout })
			before := f.srv.Stats()
			rp := f.generate(map[string]any{"prompt": "make it blue", "inputImage": tt.url, "callBackUrl": rc.srv.URL})
			if rp.env.Code != 200 {
				t.Fatalf("generate answered %d %s; Kie accepts the task and fails it", rp.env.Code, rp.raw)
			}
			id := f.srv.Tasks()[len(f.srv.Tasks())-1].TaskID
			ti := f.finish(id)
			if ti.Outcome != kie.CreateFailed || ti.ErrorCode != 400 || !strings.Contains(ti.ErrorMessage, tt.why) ||
				!strings.HasPrefix(ti.ErrorMessage, "inputImage could not be used") {
				t.Fatalf("outcome %d, errorCode %d, %q; want 2, 400, naming %q", ti.Outcome, ti.ErrorCode, ti.ErrorMessage, tt.why)
			}
			d := f.recordData(id)
			if d["successFlag"] != 2.0 || d["errorCode"] != 400.0 || d["errorMessage"] != ti.ErrorMessage {
				t.Fatalf("record-info: %v", d)
			}
			// The callback is due at the failure: sent now, by its timer or by this call.
			f.srv.DeliverDueCallbacks()
			select {
			case <-rc.arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("no callback for the failed task")
			}
			calls := rc.calls()
			if cb := calls[len(calls)-1].body; cb.Code != 400 || cb.Data.TaskID != id || cb.Data.Info.ResultImageURL != "" {
				t.Fatalf("callback %+v", cb)
			}
			after := f.srv.Stats()
			if after.InputsFailed != before.InputsFailed+1 || after.Accepted != before.Accepted+1 || after.InputsRead != before.InputsRead {
				t.Fatalf("stats before %+v after %+v", before, after)
			}
		})
	}
}

func TestEditWaitsForItsInput(t *testing.T) {
	release := make(chan struct{})
	photo := imagetest.Halves(t, 80, 80)
	mux := http.NewServeMux()
	mux.HandleFunc("/held.png", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		w.Write(photo)
	})
	host := httptest.NewServer(mux)
	defer host.Close()
	f := setup(t, Options{})
	id := f.submit(map[string]any{"prompt": "make it blue", "inputImage": host.URL + "/held.png"})
	f.clock.Advance(time.Hour) // far past any generation time
	if d := f.recordData(id); d["successFlag"] != 0.0 {
		t.Fatalf("finished before its input arrived: %v", d)
	}
	close(release)
	ti := f.finish(id)
	if d := f.recordData(id); ti.Outcome != kie.Succeeded || d["successFlag"] != 1.0 || ti.Width != 128 || ti.Height != 128 {
		t.Fatalf("after the input arrived: %+v %v", ti, d)
	}
	if ti.CompleteTime.Before(ti.CreateTime.Add(time.Hour)) {
		t.Fatalf("completed at %s, before its input arrived at %s", ti.CompleteTime, ti.CreateTime.Add(time.Hour))
	}
}
