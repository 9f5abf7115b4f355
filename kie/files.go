package kie

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"path/filepath"
)

// UploadStream uploads r as a multipart form (fields uploadPath, fileName, file) to the upload
// host. The body is streamed through a pipe as the transport sends it, so a file of any size
// costs a fixed amount of memory. fileName may be empty (Kie then names the file); the part's
// Content-Type is sniffed from the first bytes, else taken from fileName's extension.
// UploadStream returns only after it has stopped reading r; the caller still closes r.
func (c *Client) UploadStream(ctx context.Context, r io.Reader, fileName, uploadPath string) (*UploadedFile, error) {
	if r == nil {
		return nil, errors.New("kie upload-stream: nil reader")
	}
	if c.key == "" {
		return nil, noKeyError(epUploadStream.op)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeUploadForm(mw, r, fileName, uploadPath))
	}()
	var f *UploadedFile
	err := c.do(ctx, call{ep: epUploadStream, body: pr, contentType: mw.FormDataContentType()}, uploadedInto(&f))
	// The transport may stop reading early (an answer before the whole body, a failure); closing
	// the read side unblocks the writer so it stops reading r before we return.
	_ = pr.CloseWithError(errors.New("upload finished"))
	<-done
	if err != nil {
		return nil, err
	}
	return f, nil
}

func writeUploadForm(mw *multipart.Writer, r io.Reader, fileName, uploadPath string) error {
	if err := mw.WriteField("uploadPath", uploadPath); err != nil {
		return err
	}
	if fileName != "" {
		if err := mw.WriteField("fileName", fileName); err != nil {
			return err
		}
	}
	br := bufio.NewReaderSize(r, 512)
	head, err := br.Peek(512)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return fmt.Errorf("read file: %w", err)
	}
	ctype := http.DetectContentType(head)
	if ctype == "application/octet-stream" {
		if byExt := mime.TypeByExtension(filepath.Ext(fileName)); byExt != "" {
			ctype = byExt
		}
	}
	partName := fileName
	if partName == "" {
		partName = "file"
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": "file", "filename": partName}))
	h.Set("Content-Type", ctype)
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, br); err != nil {
		return fmt.Errorf("read file: %w", err)
	}
	return mw.Close()
}

// UploadBase64 uploads data as JSON {base64Data, uploadPath, fileName}. base64Data is plain
// standard base64 (no "data:" URL prefix; Kie accepts both): Kie takes the type from fileName.
// The whole file is held in memory three times over; use UploadStream beyond a few MB.
func (c *Client) UploadBase64(ctx context.Context, data []byte, fileName, uploadPath string) (*UploadedFile, error) {
	body := struct {
		Base64Data string `json:"base64Data"`
		UploadPath string `json:"uploadPath"`
		FileName   string `json:"fileName,omitempty"`
	}{base64.StdEncoding.EncodeToString(data), uploadPath, fileName}
	var f *UploadedFile
	if err := c.doJSON(ctx, epUploadBase64, body, uploadedInto(&f)); err != nil {
		return nil, err
	}
	return f, nil
}

// UploadURL asks Kie to fetch fileURL and store it as an upload.
func (c *Client) UploadURL(ctx context.Context, fileURL, fileName, uploadPath string) (*UploadedFile, error) {
	body := struct {
		FileURL    string `json:"fileUrl"`
		UploadPath string `json:"uploadPath"`
		FileName   string `json:"fileName,omitempty"`
	}{fileURL, uploadPath, fileName}
	var f *UploadedFile
	if err := c.doJSON(ctx, epUploadURL, body, uploadedInto(&f)); err != nil {
		return nil, err
	}
	return f, nil
}

func uploadedInto(dst **UploadedFile) func(json.RawMessage) error {
	return func(data json.RawMessage) error {
		f, err := decodeUploadedFile(data)
		if err != nil {
			return err
		}
		*dst = f
		return nil
	}
}

// DownloadURL exchanges a result image URL for a direct download link valid about 20 minutes.
// Kie answers 422 (IsInvalidRequest) for URLs that are not its own.
func (c *Client) DownloadURL(ctx context.Context, resultURL string) (string, error) {
	var link string
	err := c.doJSON(ctx, epDownloadURL, struct {
		URL string `json:"url"`
	}{resultURL}, func(data json.RawMessage) error {
		s, err := looseURL(data)
		if err != nil {
			return err
		}
		if s == "" {
			return errors.New("no URL")
		}
		link = s
		return nil
	})
	if err != nil {
		return "", err
	}
	return link, nil
}

// Fetch GETs a result image (or any file) from Kie's file host, for archiving. The file host is
// a CDN outside the API, so the API key is never sent (and none is needed). A non-2xx answer is
// an *Error with Op OpDownload and the HTTP status, its body read and closed; the caller reads
// and closes the body of a 2xx answer.
func (c *Client) Fetch(ctx context.Context, fileURL string) (*http.Response, error) {
	u, err := url.Parse(fileURL)
	if err != nil {
		return nil, fmt.Errorf("kie %s: %w", OpDownload, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("kie %s: %q is not an absolute http(s) URL", OpDownload, truncate(fileURL, 200))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("kie %s: build request: %w", OpDownload, err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "image/*, */*;q=0.5")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kie %s: %w", OpDownload, c.scrub(err))
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1)) // a cut-off error page still says enough
	// Drain a little more so the connection can be reused; a huge error body is not worth it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	truncated := int64(len(body)) > c.maxBytes
	if truncated {
		body = body[:c.maxBytes]
	}
	return nil, decodeAnswer(answer{
		op:        OpDownload,
		status:    resp.StatusCode,
		header:    resp.Header,
		body:      body,
		truncated: truncated,
		limit:     c.maxBytes,
		now:       c.now(),
		key:       c.key,
	}, nil)
}

func noKeyError(op string) *Error {
	return &Error{Op: op, Code: CodeUnauthorized, Msg: "no API key configured"}
}
