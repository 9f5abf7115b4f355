package server

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/jobs"
)

// The gallery's pages: /gallery/ lists the batches, /gallery/BATCH/ shows one a page at a time,
// /gallery/BATCH/thumb/ID and /gallery/BATCH/image/ID are a job's thumbnail and original. A
// batch and an id in an address are only ever looked up in the ledger; the archive is read at
// the key the ledger recorded for the job, so no address can name a file.

// maxQuery bounds a search: a prompt is at most 10,000 bytes, and a longer search finds nothing.
const maxQuery = 1000

func (s *Server) routeGallery() {
	s.handleAs("GET", "/gallery", "", browse, http.RedirectHandler("/gallery/", http.StatusMovedPermanently))
	s.handleAs("GET", "/gallery/{$}", "/gallery/", browse, http.HandlerFunc(s.galleryList))
	s.handleAs("GET", "/gallery/{batch}", "", browse, http.HandlerFunc(s.galleryBatchSlash))
	s.handleAs("GET", "/gallery/{batch}/{$}", "/gallery/{batch}/", browse, http.HandlerFunc(s.galleryPage))
	s.handleAs("GET", "/gallery/{batch}/thumb/{id}", "/gallery/{batch}/thumb/{id}", browse, http.HandlerFunc(s.galleryThumb))
	s.handleAs("GET", "/gallery/{batch}/image/{id}", "/gallery/{batch}/image/{id}", browse, http.HandlerFunc(s.galleryImage))
}

// handleAs registers a route whose mux pattern differs from the path docs/openapi.yaml gives
// it ("" registers an undocumented redirect).
func (s *Server) handleAs(method, pattern, doc string, a access, h http.Handler) {
	if doc != "" {
		s.routes = append(s.routes, Route{Method: method, Path: doc})
	}
	s.mux.Handle(method+" "+pattern, s.guard(a, h))
}

func htmlHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", gallery.CSP())
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
}

// galleryError answers a gallery request with a short page (a browser shows it).
func galleryError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

func (s *Server) galleryList(w http.ResponseWriter, r *http.Request) {
	list, err := s.gallery.Summaries(r.Context())
	if err != nil {
		s.log.Error("gallery: reading the batches", "err", err)
		galleryError(w, http.StatusServiceUnavailable, "reading the ledger failed")
		return
	}
	var buf bytes.Buffer
	if err := gallery.RenderList(&buf, list); err != nil {
		s.log.Error("gallery: rendering the batch list", "err", err)
		galleryError(w, http.StatusInternalServerError, "rendering the page failed")
		return
	}
	htmlHeaders(w)
	_, _ = w.Write(buf.Bytes())
}

// summary reads the batch an address names, answering 404 itself when there is none.
func (s *Server) summary(w http.ResponseWriter, r *http.Request) (gallery.Summary, bool) {
	sum, err := s.gallery.Summary(r.Context(), r.PathValue("batch"))
	switch {
	case errors.Is(err, gallery.ErrNoBatch):
		galleryError(w, http.StatusNotFound, "no such batch")
		return sum, false
	case err != nil:
		s.log.Error("gallery: reading a batch", "err", err)
		galleryError(w, http.StatusServiceUnavailable, "reading the ledger failed")
		return sum, false
	}
	return sum, true
}

// galleryBatchSlash sends /gallery/BATCH to /gallery/BATCH/, whose relative links work.
func (s *Server) galleryBatchSlash(w http.ResponseWriter, r *http.Request) {
	sum, ok := s.summary(w, r)
	if !ok {
		return
	}
	http.Redirect(w, r, "/gallery/"+sum.Batch+"/", http.StatusMovedPermanently)
}

func (s *Server) galleryPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st, err := gallery.ParseState(q.Get("state"))
	if err != nil {
		galleryError(w, http.StatusBadRequest, err.Error())
		return
	}
	from, err := strconv.ParseInt(q.Get("from"), 10, 64)
	if q.Get("from") == "" {
		from, err = 0, nil
	}
	if err != nil || from < 0 {
		galleryError(w, http.StatusBadRequest, "from: want a position, 0 or more")
		return
	}
	search := strings.TrimSpace(q.Get("q"))
	if len(search) > maxQuery {
		galleryError(w, http.StatusBadRequest, "q: at most 1000 bytes")
		return
	}
	sum, ok := s.summary(w, r)
	if !ok {
		return
	}
	p, err := s.gallery.Page(r.Context(), sum, gallery.Filter{State: st, Query: search}, from)
	if err != nil {
		s.log.Error("gallery: reading a page", "batch", sum.Batch, "err", err)
		galleryError(w, http.StatusServiceUnavailable, "reading the ledger failed")
		return
	}
	var buf bytes.Buffer
	if err := gallery.RenderPage(&buf, p); err != nil {
		s.log.Error("gallery: rendering a page", "batch", sum.Batch, "err", err)
		galleryError(w, http.StatusInternalServerError, "rendering the page failed")
		return
	}
	htmlHeaders(w)
	_, _ = w.Write(buf.Bytes())
}

// galleryJob reads the archived job an address names and the key of its image, answering
// itself when there is none.
func (s *Server) galleryJob(w http.ResponseWriter, r *http.Request) (*jobs.Job, string, bool) {
	b, id := r.PathValue("batch"), r.PathValue("id")
	if jobs.CheckName(b) != "" || jobs.CheckName(id) != "" {
		galleryError(w, http.StatusNotFound, "no such image")
		return nil, "", false
	}
	j, err := s.ledger.Get(r.Context(), jobs.Ref{Batch: b, ID: id})
	if errors.Is(err, jobs.ErrNotFound) {
		galleryError(w, http.StatusNotFound, "no such image")
		return nil, "", false
	}
	if err != nil {
		s.log.Error("gallery: reading a job", "err", err)
		galleryError(w, http.StatusServiceUnavailable, "reading the ledger failed")
		return nil, "", false
	}
	key, err := gallery.ImageKey(s.o.Archive, j)
	if err != nil {
		if !errors.Is(err, gallery.ErrNoImage) || j.State == jobs.Archived {
			s.log.Warn("gallery: no image to show", "job", j.Ref.String(), "err", err)
		}
		galleryError(w, http.StatusNotFound, "no archived image for this job here")
		return nil, "", false
	}
	return j, key, true
}

func (s *Server) galleryThumb(w http.ResponseWriter, r *http.Request) {
	j, key, ok := s.galleryJob(w, r)
	if !ok {
		return
	}
	if s.o.Thumbs == nil {
		galleryError(w, http.StatusNotFound, "thumbnails are not kept by this server")
		return
	}
	p, err := s.o.Thumbs.Path(r.Context(), s.o.Archive, key, j.SHA256)
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("gallery: no thumbnail", "job", j.Ref.String(), "err", err)
		}
		galleryError(w, http.StatusNotFound, "no thumbnail for this image")
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	// A thumbnail is named by its image's hash: it never changes under its job while the job
	// keeps the image.
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Header().Set("ETag", `"`+j.SHA256+`"`)
	http.ServeFile(w, r, p)
}

func (s *Server) galleryImage(w http.ResponseWriter, r *http.Request) {
	j, key, ok := s.galleryJob(w, r)
	if !ok {
		return
	}
	rc, err := s.o.Archive.Open(r.Context(), key)
	if err != nil {
		s.log.Warn("gallery: opening an image", "job", j.Ref.String(), "err", err)
		galleryError(w, http.StatusNotFound, "the image is not in the archive")
		return
	}
	defer rc.Close()
	ct := "image/jpeg"
	if strings.HasSuffix(strings.ToLower(key), ".png") {
		ct = "image/png"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Header().Set("ETag", `"`+j.SHA256+`"`)
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs)
		return
	}
	if j.Bytes > 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(j.Bytes, 10))
	}
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		s.log.Warn("gallery: sending an image", "job", j.Ref.String(), "err", err)
	}
}
