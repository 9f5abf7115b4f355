package jobs

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestInputChecker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pngPath := writeImage(t, dir, "a.png", "png")
	pngBytes, err := os.ReadFile(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	webp, _ := base64.StdEncoding.DecodeString(tinyWebP)
	var gets atomic.Int64
	mux := http.NewServeMux()
	serve := func(path, ct string, body []byte, headStatus int) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if ct != "" {
				w.Header().Set("Content-Type", ct)
			}
			if r.Method == http.MethodHead {
				if headStatus != 0 {
					w.WriteHeader(headStatus)
				}
				return
			}
			gets.Add(1)
			if got := r.Header.Get("Range"); got != "bytes=0-511" {
				t.Errorf("GET %s asks for %q, not the first bytes", path, got)
			}
			w.Write(body)
		})
	}
	serve("/photo.png", "image/png", pngBytes, 0)
	serve("/photo.webp", "image/webp; charset=binary", webp, 0)
	serve("/signed.png", "image/png", pngBytes, http.StatusForbidden) // signed for GET only
	serve("/no-head.png", "image/png", pngBytes, http.StatusMethodNotAllowed)
	serve("/octets", "application/octet-stream", pngBytes, 0)
	serve("/login.png", "text/html; charset=utf-8", []byte("<!doctype html><html><body>Please sign in</body></html>"), 0)
	serve("/liar.png", "image/png", []byte("this is not a picture at all"), http.StatusMethodNotAllowed)
	serve("/empty.png", "image/png", nil, http.StatusMethodNotAllowed)
	mux.HandleFunc("/huge.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", "50000000")
		if r.Method == http.MethodHead {
			return
		}
		w.Write(pngBytes)
	})
	mux.HandleFunc("/slow.png", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c := &InputChecker{Timeout: 500 * time.Millisecond}
	tests := []struct {
		name, input string
		want        string // "" for no error, else a part of it
		gets        int64  // GETs it takes
	}{
		{"image by HEAD", srv.URL + "/photo.png", "", 0},
		{"webp with parameters", srv.URL + "/photo.webp", "", 0},
		{"HEAD refused, GET signed", srv.URL + "/signed.png", "", 1},
		{"HEAD not allowed", srv.URL + "/no-head.png", "", 1},
		{"no image type, image bytes", srv.URL + "/octets", "", 1},
		{"missing", srv.URL + "/missing.png", "HTTP 404 Not Found", 0},
		{"a login page", srv.URL + "/login.png", "not an image (Content-Type text/html; charset=utf-8, content looks like text/html", 1},
		{"text served as png", srv.URL + "/liar.png", "content looks like text/plain", 1},
		{"empty", srv.URL + "/empty.png", "the file is empty", 1},
		{"too large", srv.URL + "/huge.png", "is 50000000 bytes; at most", 0},
		{"no answer", srv.URL + "/slow.png", "no answer within 500ms", 0},
		{"closed port", "http://127.0.0.1:1/a.png", "cannot be fetched: dial tcp 127.0.0.1:1", 0},
		{"not http", "ftp://example.com/a.png", "not an http(s) URL", 0},
		{"local image", pngPath, "", 0},
		{"local missing", filepath.Join(dir, "gone.png"), "no such file", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := gets.Load()
			err := c.Check(context.Background(), tt.input)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Check(%s) = %v, want no error", tt.input, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Check(%s) = %v, want an error containing %q", tt.input, err, tt.want)
			case tt.want != "" && strings.HasPrefix(tt.input, "http") && !strings.HasPrefix(err.Error(), `"`+tt.input+`"`):
				t.Fatalf("Check(%s) = %v: the message does not start with the URL", tt.input, err)
			}
			if n := gets.Load() - before; n != tt.gets {
				t.Errorf("%d GETs, want %d", n, tt.gets)
			}
		})
	}
}
