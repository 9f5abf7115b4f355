package kiesim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// upload is a stored file. Kie keys uploads by uploadPath/fileName: a second upload to the same
// path replaces the first.
type upload struct {
	filePath string
	data     []byte
	mime     string
	at       time.Time
}

// streamUpload is POST /api/file-stream-upload (multipart: file, uploadPath, fileName).
func (s *Sim) streamUpload(r *http.Request, body []byte) answer {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return fail(400, "Content-Type must be multipart/form-data")
	}
	form, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).ReadForm(maxUploadBody)
	if err != nil {
		return fail(400, "multipart body could not be read")
	}
	defer form.RemoveAll()
	files := form.File["file"]
	if len(files) == 0 {
		return fail(400, "file is required")
	}
	f, err := files[0].Open()
	if err != nil {
		return fail(400, "file could not be read")
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return fail(400, "file could not be read")
	}
	return s.store(r, first(form.Value["uploadPath"]), first(form.Value["fileName"]), data)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// base64Upload is POST /api/file-base64-upload; base64Data may be plain base64 or a data: URL.
func (s *Sim) base64Upload(r *http.Request, body []byte) answer {
	if !isJSON(r) {
		return fail(400, "Content-Type must be application/json")
	}
	var req struct {
		Base64Data string `json:"base64Data"`
		UploadPath string `json:"uploadPath"`
		FileName   string `json:"fileName"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(400, "request body is not valid JSON")
	}
	b64 := req.Base64Data
	if strings.HasPrefix(b64, "data:") {
		meta, payload, found := strings.Cut(b64, ",")
		if !found || !strings.HasSuffix(meta, ";base64") {
			return fail(400, "base64Data is not a base64 data URL")
		}
		b64 = payload
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fail(400, "base64Data is not valid base64")
	}
	return s.store(r, req.UploadPath, req.FileName, data)
}

// urlUpload is POST /api/file-url-upload. The simulator fetches its own files, loopback URLs,
// and other hosts only with Options.RemoteFetch: a test never reaches out to the network.
func (s *Sim) urlUpload(r *http.Request, body []byte) answer {
	if !isJSON(r) {
		return fail(400, "Content-Type must be application/json")
	}
	var req struct {
		FileURL    string `json:"fileUrl"`
		UploadPath string `json:"uploadPath"`
		FileName   string `json:"fileName"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(400, "request body is not valid JSON")
	}
	if !isHTTPURL(req.FileURL) {
		return fail(400, "fileUrl must be an http(s) URL")
	}
	u, _ := url.Parse(req.FileURL)
	name := req.FileName
	if name == "" {
		name = path.Base(u.Path) // Kie takes the name from the URL when none is given
		if name == "/" || name == "." {
			name = ""
		}
	}
	data, err := s.fetch(r.Context(), req.FileURL, s.baseURL(r))
	if err != nil {
		return fail(400, "fileUrl could not be downloaded: "+err.Error())
	}
	return s.store(r, req.UploadPath, name, data)
}

func (s *Sim) fetch(ctx context.Context, raw, base string) ([]byte, error) {
	s.mu.Lock()
	f, own := s.lookupLocked(raw, base, s.nowLocked())
	s.mu.Unlock()
	if own {
		switch {
		case f == nil:
			return nil, fmt.Errorf("not found")
		case f.upload != nil:
			return f.upload.data, nil
		default:
			return s.imageOf(f.task), nil
		}
	}
	return s.fetchRemote(ctx, raw, maxUploadBody)
}

// store keeps data at uploadPath/fileName and answers as the upload host does.
func (s *Sim) store(r *http.Request, uploadPath, fileName string, data []byte) answer {
	uploadPath = strings.Trim(uploadPath, "/")
	switch {
	case uploadPath == "":
		return fail(400, "uploadPath is required")
	case strings.Contains(uploadPath, ".."):
		return fail(400, "uploadPath is invalid")
	case strings.ContainsAny(fileName, "/\\") || fileName == "..":
		return fail(400, "fileName is invalid")
	case len(data) == 0:
		return fail(400, "file is empty")
	}
	base := s.baseURL(r)
	mimeType := http.DetectContentType(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	if fileName == "" {
		fileName = fmt.Sprintf("%016x%s", s.rngLocked("upload-name").Uint64(), extFor(mimeType))
	}
	filePath := uploadPath + "/" + fileName
	s.uploads[filePath] = &upload{filePath: filePath, data: data, mime: mimeType, at: now}
	s.counters.Uploads++
	segments := strings.Split(filePath, "/")
	for i, seg := range segments {
		segments[i] = url.PathEscape(seg)
	}
	return success(map[string]any{
		"fileName":    fileName,
		"filePath":    filePath,
		"downloadUrl": base + pathFiles + "upload/" + strings.Join(segments, "/"),
		"fileSize":    len(data),
		"mimeType":    mimeType,
		"uploadedAt":  now.UTC().Format("2006-01-02T15:04:05.000Z"),
	})
}

func extFor(mimeType string) string {
	switch mimeType {
	case "image/png":
		return ".png"
	case "image/jpeg":
		return ".jpg"
	case "image/webp":
		return ".webp"
	case "image/gif":
		return ".gif"
	}
	return ".bin"
}
