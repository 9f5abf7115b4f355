package kiesim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// direct is a link from download-url: the same image as a result, valid DirectURLTTL.
type direct struct {
	task    *task
	expires time.Time
}

// file is a resolved /files/ path: a task image or an upload.
type file struct {
	task   *task // for result, origin and direct links
	upload *upload
}

// lookupLocked resolves raw (an absolute URL) to a file the simulator serves at now. own says
// whether raw points at the simulator at all (same host as base, under /files/), so a caller
// can tell "not ours" from "ours but gone".
func (s *Sim) lookupLocked(raw, base string, now time.Time) (f *file, own bool) {
	u, err := url.Parse(raw)
	b, berr := url.Parse(base)
	if err != nil || berr != nil || !strings.EqualFold(u.Host, b.Host) || !strings.HasPrefix(u.Path, pathFiles) {
		return nil, false
	}
	return s.resolveLocked(u.Path, now), true
}

// resolveLocked maps a path under /files/ to what it serves now, nil when it does not exist or
// has expired.
func (s *Sim) resolveLocked(path string, now time.Time) *file {
	kind, rest, _ := strings.Cut(strings.TrimPrefix(path, pathFiles), "/")
	switch kind {
	case "result", "origin":
		id, _, _ := strings.Cut(rest, ".")
		t := s.tasks[id]
		if t == nil || t.flagAt(now) != 1 {
			return nil
		}
		want, ttl := t.resultPath(), s.o.ResultTTL
		if kind == "origin" {
			want, ttl = t.originPath(), s.o.OriginTTL
		}
		if path != want || !now.Before(t.completeAt.Add(ttl)) {
			return nil
		}
		return &file{task: t}
	case "direct":
		token, _, _ := strings.Cut(rest, ".")
		d := s.directs[token]
		if d == nil || !now.Before(d.expires) || !now.Before(d.task.completeAt.Add(s.o.ResultTTL)) {
			return nil
		}
		return &file{task: d.task}
	case "upload":
		up := s.uploads[rest]
		if up == nil || !now.Before(up.at.Add(s.o.UploadTTL)) {
			return nil
		}
		return &file{upload: up}
	}
	return nil
}

// serveFile serves /files/... without auth, as Kie's CDN does, with the download faults.
func (s *Sim) serveFile(w http.ResponseWriter, r *http.Request) {
	s.countRequest(EndpointFiles)
	if !s.userAgentOK(r) {
		s.refuseUserAgent(w, EndpointFiles)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.plain(w, http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	f := s.resolveLocked(r.URL.Path, s.nowLocked())
	if f == nil {
		s.mu.Unlock()
		s.plain(w, http.StatusNotFound)
		return
	}
	if f.upload != nil {
		data, mimeType := f.upload.data, f.upload.mime
		s.mu.Unlock()
		s.countAnswer(EndpointFiles, http.StatusOK)
		w.Header().Set("Content-Type", mimeType)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			w.Write(data)
		}
		return
	}
	status := 0
	if s.rollLocked("download-error") < s.o.DownloadErrorRate {
		status = http.StatusInternalServerError
		if s.rollLocked("download-error-kind") < 0.5 {
			status = http.StatusServiceUnavailable
		}
		s.counters.DownloadErrors++
	}
	truncate := s.rollLocked("truncate") < s.o.TruncateRate
	delay := s.o.DownloadDelay
	t := f.task
	s.mu.Unlock()

	if status != 0 {
		s.plain(w, status)
		return
	}
	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return
		case <-s.ctx.Done():
			timer.Stop()
			s.plain(w, http.StatusServiceUnavailable)
			return
		}
	}
	b := s.imageOf(t)
	w.Header().Set("Content-Type", imageMIME(t.format))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		s.countAnswer(EndpointFiles, http.StatusOK)
		return
	}
	if truncate {
		s.mu.Lock()
		s.counters.DownloadsTruncated++
		s.mu.Unlock()
		s.countAnswer(EndpointFiles, http.StatusOK)
		w.Write(b[:len(b)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		// Aborting the handler closes the connection with the announced length unmet, which
		// is what a client sees when a CDN drops a transfer.
		panic(http.ErrAbortHandler)
	}
	if _, err := w.Write(b); err != nil {
		return
	}
	s.mu.Lock()
	t.served++
	s.counters.ImagesServed++
	s.mu.Unlock()
	s.countAnswer(EndpointFiles, http.StatusOK)
}

func (s *Sim) plain(w http.ResponseWriter, status int) {
	s.countAnswer(EndpointFiles, status)
	http.Error(w, http.StatusText(status), status)
}

// downloadURL is POST /api/v1/common/download-url: a fresh link to one of the simulator's own
// result (or origin) images, valid DirectURLTTL. Anything else is a "non-Kie URL" (422). A link
// to an expired result is still issued, and answers 404 like the result itself.
func (s *Sim) downloadURL(r *http.Request, body []byte) answer {
	if !isJSON(r) {
		return fail(422, "Content-Type must be application/json")
	}
	var req struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.URL == "" {
		return fail(422, "url is required")
	}
	base := s.baseURL(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	t := s.imageTaskLocked(req.URL, base, now)
	if t == nil {
		return fail(422, "The url is not a file generated by Kie")
	}
	token := fmt.Sprintf("%016x", s.rngLocked("direct").Uint64())
	s.directs[token] = &direct{task: t, expires: now.Add(DirectURLTTL)}
	return success(base + "/files/direct/" + token + "." + t.ext())
}

// imageTaskLocked finds the successful task whose result or origin URL raw is.
func (s *Sim) imageTaskLocked(raw, base string, now time.Time) *task {
	u, err := url.Parse(raw)
	b, berr := url.Parse(base)
	if err != nil || berr != nil || !strings.EqualFold(u.Host, b.Host) {
		return nil
	}
	_, rest, _ := strings.Cut(strings.TrimPrefix(u.Path, pathFiles), "/")
	id, _, _ := strings.Cut(rest, ".")
	t := s.tasks[id]
	if t == nil || t.flagAt(now) != 1 || (u.Path != t.resultPath() && u.Path != t.originPath()) {
		return nil
	}
	return t
}
