package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kontextq/kontextq/internal/pool"
	"github.com/kontextq/kontextq/jobs"
)

// problem is one thing wrong with a request, located by line for NDJSON bodies.
type problem struct {
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

type errorBody struct {
	Error    string    `json:"error"`
	Problems []problem `json:"problems,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string, ps []problem) {
	writeJSON(w, status, errorBody{Error: msg, Problems: ps})
}

// jobResult is what POST /v1/jobs says about one job.
type jobResult struct {
	Line  int        `json:"line,omitempty"`
	Batch string     `json:"batch"`
	ID    string     `json:"id"`
	Added bool       `json:"added"`
	State jobs.State `json:"state"`
}

type batchResult struct {
	Batch    string      `json:"batch"`
	Added    int         `json:"added"`
	Existing int         `json:"existing"`
	Jobs     []jobResult `json:"jobs"`
}

// postJobs takes one job (application/json) or many (application/x-ndjson). It follows the
// loader's rule: every line is checked first, and nothing is enqueued if any line is bad.
func (s *Server) postJobs(w http.ResponseWriter, r *http.Request) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	var bulk bool
	switch mt {
	case "application/json":
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		bulk = true
	default:
		writeError(w, http.StatusUnsupportedMediaType,
			"Content-Type must be application/json (one job) or application/x-ndjson (one job per line)", nil)
		return
	}
	batch, prio := r.URL.Query().Get("batch"), r.URL.Query().Get("priority")
	var body io.Reader
	if bulk {
		select {
		case s.bulk <- struct{}{}:
			defer func() { <-s.bulk }()
		case <-r.Context().Done():
			return
		}
		body = http.MaxBytesReader(w, r.Body, s.o.MaxBatchBytes)
	} else {
		line, b, p, ps, err := singleJobLine(http.MaxBytesReader(w, r.Body, s.o.MaxJobBytes), batch, prio)
		if s.bodyError(w, err) {
			return
		}
		if len(ps) > 0 {
			writeError(w, http.StatusBadRequest, "bad job; nothing was enqueued", ps)
			return
		}
		batch, prio, body = b, p, bytes.NewReader(line)
	}
	pr, err := jobs.ParsePriority(prio, jobs.Normal)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad priority; nothing was enqueued", []problem{{Field: "priority", Message: err.Error()}})
		return
	}
	if batch == "" {
		where := "?batch=NAME"
		if !bulk {
			where = `"batch" in the body or ` + where
		}
		writeError(w, http.StatusBadRequest, "no batch: give "+where, []problem{{Field: "batch", Message: "is required"}})
		return
	}
	if ps := checkBatch(batch); len(ps) > 0 {
		writeError(w, http.StatusBadRequest, "bad batch name; nothing was enqueued", ps)
		return
	}
	limit, setLimit, ps := maxCreditsParam(r)
	if len(ps) > 0 {
		writeError(w, http.StatusBadRequest, "bad maxCredits; nothing was enqueued", ps)
		return
	}
	items, ps, err := readJobs(body, batch)
	if s.bodyError(w, err) {
		return
	}
	if len(ps) > 0 {
		msg := "bad job; nothing was enqueued"
		if bulk {
			msg = fmt.Sprintf("%d bad line(s); nothing was enqueued", countLines(ps))
		}
		if !bulk {
			for i := range ps {
				ps[i].Line = 0
			}
		}
		writeError(w, http.StatusBadRequest, msg, ps)
		return
	}
	if setLimit {
		// The cap before the jobs: a worker may take the first job at once.
		if _, err := s.o.Enqueuer.SetMaxCredits(r.Context(), batch, limit, s.prices); err != nil {
			s.log.Error("setting a batch's credit cap", "batch", batch, "err", err)
			writeError(w, http.StatusServiceUnavailable, "setting the credit cap failed; nothing was enqueued: "+err.Error(), nil)
			return
		}
	}
	res, err := s.enqueue(r.Context(), items, pr)
	if err != nil {
		s.log.Error("enqueuing API jobs", "batch", batch, "jobs", len(items), "err", err)
		writeError(w, http.StatusServiceUnavailable, "enqueuing failed; posting the same body again is safe (nothing is enqueued twice): "+err.Error(), nil)
		return
	}
	if !bulk {
		j := res[0]
		j.Line = 0
		status := http.StatusOK
		if j.Added {
			status = http.StatusCreated
		}
		writeJSON(w, status, j)
		return
	}
	out := batchResult{Batch: batch, Jobs: res}
	for _, j := range res {
		if j.Added {
			out.Added++
		} else {
			out.Existing++
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// maxCreditsParam reads ?maxCredits=: the batch's credit cap, a number of credits 0 or more, or
// "none" to remove it. set is false when the parameter is absent.
func maxCreditsParam(r *http.Request) (limit *jobs.Credits, set bool, ps []problem) {
	q := r.URL.Query()
	if !q.Has("maxCredits") {
		return nil, false, nil
	}
	v := strings.TrimSpace(q.Get("maxCredits"))
	if strings.EqualFold(v, "none") {
		return nil, true, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f > 1e15 {
		return nil, false, []problem{{Field: "maxCredits", Message: fmt.Sprintf("%q: want a number of credits, 0 or more, or none", v)}}
	}
	c := jobs.CreditsOf(f)
	return &c, true, nil
}

// bodyError answers an error reading the body; it reports whether there was one.
func (s *Server) bodyError(w http.ResponseWriter, err error) bool {
	if err == nil {
		return false
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		writeError(w, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body over %d bytes; nothing was enqueued (split it into several requests)", mb.Limit), nil)
		return true
	}
	writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error(), nil)
	return true
}

func countLines(ps []problem) int {
	n, last := 0, -1
	for _, p := range ps {
		if p.Line != last {
			n++
			last = p.Line
		}
	}
	return n
}

func checkBatch(b string) []problem {
	sp := jobs.Spec{Batch: b, Prompt: "x"}
	var ve *jobs.ValidationError
	if err := sp.Validate(); errors.As(err, &ve) {
		var ps []problem
		for _, p := range ve.Problems {
			ps = append(ps, problem{Field: p.Field, Message: p.Message})
		}
		return ps
	}
	return nil
}

// singleJobLine turns a single JSON object, which may span lines, into one JSONL line without
// its "batch" and "priority" fields (a job line may name neither), and returns the batch and
// priority it named or the query's.
func singleJobLine(body io.Reader, query, queryPrio string) (line []byte, batch, prio string, ps []problem, err error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, "", "", nil, err
	}
	invalid := func(err error) (line []byte, batch, prio string, ps []problem, _ error) {
		return nil, "", "", []problem{{Message: "invalid JSON: " + err.Error()}}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return invalid(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, "", "", []problem{{Message: `want one JSON object such as {"prompt": "...", "batch": "..."}`}}, nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	batch, prio = query, queryPrio
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid(err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return invalid(err)
		}
		if key == "batch" {
			var bb string
			if err := json.Unmarshal(v, &bb); err != nil {
				ps = append(ps, problem{Field: "batch", Message: "must be a string"})
				continue
			}
			if query != "" && bb != query {
				ps = append(ps, problem{Field: "batch", Message: fmt.Sprintf("%q in the body disagrees with ?batch=%s", bb, query)})
			}
			batch = bb
			continue
		}
		if key == "priority" {
			var pp string
			if err := json.Unmarshal(v, &pp); err != nil {
				ps = append(ps, problem{Field: "priority", Message: "must be a string: interactive, normal or bulk"})
				continue
			}
			if queryPrio != "" && pp != queryPrio {
				ps = append(ps, problem{Field: "priority", Message: fmt.Sprintf("%q in the body disagrees with ?priority=%s", pp, queryPrio)})
			}
			prio = pp
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		b.Write(k)
		b.WriteByte(':')
		if err := json.Compact(&b, v); err != nil {
			return invalid(err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return invalid(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "", "", []problem{{Message: "invalid JSON: unexpected text after the object (several jobs go as application/x-ndjson)"}}, nil
	}
	b.WriteByte('}')
	return b.Bytes(), batch, prio, ps, nil
}

// readJobs reads and validates every job line of body. Problems are sorted by line; a read
// error (an oversized body) is returned as err.
func readJobs(body io.Reader, batch string) ([]jobs.Item, []problem, error) {
	f := newRemoteOnly(body)
	rd, err := jobs.NewReader(f, "request", jobs.FormatJSONL, jobs.ReadOptions{Batch: batch})
	if err != nil {
		return nil, []problem{{Message: err.Error()}}, nil
	}
	var items []jobs.Item
	var ps []problem
	noJobs := false
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *jobs.LineError
		switch {
		case errors.As(err, &le):
			if len(le.Problems) == 0 {
				ps = append(ps, problem{Line: le.Line, Field: le.Field, Message: le.Msg})
			}
			for _, p := range le.Problems {
				ps = append(ps, problem{Line: le.Line, Field: p.Field, Message: p.Message})
			}
			continue
		case errors.Is(err, jobs.ErrNoJobs):
			noJobs = true
		case err != nil:
			if f.err != nil {
				return nil, nil, f.err
			}
			return nil, nil, err
		}
		if noJobs {
			break
		}
		// Defence in depth: the filter has already kept local paths away from the reader.
		if !remoteURL(it.Spec.InputImage) && it.Spec.InputImage != "" {
			ps = append(ps, problem{Line: it.Line, Field: "inputImage", Message: localRefused})
			continue
		}
		items = append(items, it)
	}
	ps = append(ps, f.problems...)
	if noJobs && len(ps) == 0 {
		ps = append(ps, problem{Message: "no jobs in the request body"})
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return items, ps, nil
}

// enqueue enqueues valid items with a few concurrent Redis round trips, as the loader does.
func (s *Server) enqueue(ctx context.Context, items []jobs.Item, pr jobs.Priority) ([]jobResult, error) {
	res := make([]jobResult, len(items))
	indexes := func(yield func(int) bool) {
		for i := range items {
			if !yield(i) {
				return
			}
		}
	}
	err := pool.Each(ctx, 16, indexes, func(ctx context.Context, i int) error {
		out, err := s.o.Enqueuer.EnqueueValid(ctx, &items[i].Spec, jobs.WithPriority(pr))
		if err != nil {
			return err
		}
		st := out.State
		if out.Added {
			st = jobs.Queued
		}
		res[i] = jobResult{Line: items[i].Line, Batch: out.Ref.Batch, ID: out.Ref.ID, Added: out.Added, State: st}
		return nil
	})
	return res, err
}

// jobView is a job as GET /v1/jobs shows it.
type jobView struct {
	Batch       string      `json:"batch"`
	ID          string      `json:"id"`
	State       jobs.State  `json:"state"`
	Reason      jobs.Reason `json:"reason,omitempty"`
	Error       string      `json:"error,omitempty"`
	Held        string      `json:"held,omitempty"` // why the budget holds the queued job
	Request     jobs.Spec   `json:"request"`
	TaskID      string      `json:"taskId,omitempty"`
	Submissions int         `json:"submissions"`
	CreatedAt   *time.Time  `json:"createdAt,omitempty"`
	SubmittedAt *time.Time  `json:"submittedAt,omitempty"`
	ExpiresAt   *time.Time  `json:"expiresAt,omitempty"`
	ArchivedAt  *time.Time  `json:"archivedAt,omitempty"`
	Location    string      `json:"location,omitempty"`
	SHA256      string      `json:"sha256,omitempty"`
	Bytes       int64       `json:"bytes,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	ref := jobs.Ref{Batch: r.PathValue("batch"), ID: r.PathValue("id")}
	if ref.Batch == "" {
		ref.Batch = r.URL.Query().Get("batch")
	}
	if ref.Batch == "" {
		writeError(w, http.StatusBadRequest, "no batch: ids are unique per batch; use GET /v1/jobs/{batch}/{id} or ?batch=NAME",
			[]problem{{Field: "batch", Message: "is required"}})
		return
	}
	j, err := s.ledger.Get(r.Context(), ref)
	if errors.Is(err, jobs.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no job %s (never enqueued, or finished longer ago than the ledger keeps jobs)", ref), nil)
		return
	}
	if err != nil {
		s.log.Error("reading a job", "job", ref.String(), "err", err)
		writeError(w, http.StatusServiceUnavailable, "reading the ledger failed", nil)
		return
	}
	spec := j.Spec
	spec.ID, spec.Batch = "", ""
	writeJSON(w, http.StatusOK, jobView{
		Batch: j.Batch, ID: j.ID, State: j.State, Reason: j.Reason, Error: j.Error, Held: j.Held, Request: spec,
		TaskID: j.TaskID, Submissions: j.Submissions,
		CreatedAt: timePtr(j.Created), SubmittedAt: timePtr(j.SubmittedAt), ExpiresAt: timePtr(j.ExpiresAt),
		ArchivedAt: timePtr(j.ArchivedAt), Location: j.Location, SHA256: j.SHA256, Bytes: j.Bytes,
	})
}

// maxFailuresShown bounds the failures GET /v1/batches lists: reading each one is a Redis
// round trip's worth of work.
const maxFailuresShown = 1000

type failureView struct {
	ID     string      `json:"id"`
	Reason jobs.Reason `json:"reason"`
	Error  string      `json:"error,omitempty"`
}

type batchView struct {
	Batch     string        `json:"batch"`
	Total     int64         `json:"total"`
	Queued    int64         `json:"queued"`
	Submitted int64         `json:"submitted"`
	Generated int64         `json:"generated"`
	Archived  int64         `json:"archived"`
	Failed    int64         `json:"failed"`
	Done      bool          `json:"done"`
	Failures  []failureView `json:"failures,omitempty"`
	// The budget: credits spent, the cap (absent without one), and the queued jobs it holds.
	Spent      float64  `json:"spent"`
	MaxCredits *float64 `json:"maxCredits,omitempty"`
	Held       int64    `json:"held"`
	HeldReason string   `json:"heldReason,omitempty"`
}

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	b := r.PathValue("batch")
	c, err := s.ledger.Counts(r.Context(), b)
	if err != nil {
		s.log.Error("reading batch counts", "batch", b, "err", err)
		writeError(w, http.StatusServiceUnavailable, "reading the ledger failed", nil)
		return
	}
	if c.Total == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no batch %q", b), nil)
		return
	}
	bb, err := s.ledger.Budget(r.Context(), b)
	if err != nil {
		s.log.Error("reading batch budget", "batch", b, "err", err)
		writeError(w, http.StatusServiceUnavailable, "reading the ledger failed", nil)
		return
	}
	v := batchView{Batch: b, Total: c.Total, Queued: c.Queued, Submitted: c.Submitted, Generated: c.Generated,
		Archived: c.Archived, Failed: c.Failed, Done: c.Done(),
		Spent: bb.Spent.Float(), Held: bb.Held(), HeldReason: bb.HeldReason()}
	if bb.HasCap {
		m := bb.Cap.Float()
		v.MaxCredits = &m
	}
	if c.Failed > 0 && c.Failed <= maxFailuresShown {
		fails, err := s.ledger.Failures(r.Context(), b)
		if err != nil {
			s.log.Error("reading batch failures", "batch", b, "err", err)
			writeError(w, http.StatusServiceUnavailable, "reading the ledger failed", nil)
			return
		}
		sort.Slice(fails, func(i, j int) bool { return fails[i].ID < fails[j].ID })
		for _, j := range fails {
			v.Failures = append(v.Failures, failureView{ID: j.ID, Reason: j.Reason, Error: j.Error})
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// remoteURL reports whether an inputImage is an http(s) URL (the only kind a remote caller may
// give).
func remoteURL(v string) bool {
	l := strings.ToLower(v)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}
