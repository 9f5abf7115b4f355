package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/kontextq/kontextq/kie"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// generatePath is the generate endpoint as Kie (and the simulator) serve it.
const generatePath = "/api/v1/flux/kontext/generate"

// simKey is the simulator's bearer key. It is no secret (the simulator is local and throwaway),
// but it is still never printed.
const simKey = "bench-sim-key"

// simServer is one simulated Kie account served on a loopback port, with a record of every
// generate answer.
type simServer struct {
	*kiesim.Sim
	url string
	srv *http.Server

	mu      sync.Mutex
	answers []answer

	storm interval // set while and after a storm, under mu
}

// startSim serves a simulator of the account of case c at o's scale on 127.0.0.1:0.
func startSim(o Options, c Case) (*simServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listening for the simulator: %w", err)
	}
	url := "http://" + ln.Addr().String()
	so := kiesim.Options{
		Key:                   simKey,
		Seed:                  o.Seed,
		PublicURL:             url,
		GenerateLimit:         o.Scale.Limit,
		GenerateWindow:        o.Scale.Window,
		RecordInfoLimit:       kiePollEvents,
		RecordInfoWindow:      o.Scale.compress(kiePollPer),
		ErrorSignal:           kiesim.SignalEither,
		GenTimeMedian:         o.Scale.GenMedian,
		GenerationFailureRate: c.Faults.GenerationFailure,
		TransientErrorRate:    c.Faults.Transient,
		TruncateRate:          c.Faults.Truncate,
	}
	if c.ResultTTL > 0 {
		so.ResultTTL = o.Scale.compress(c.ResultTTL)
	}
	sim := kiesim.New(so)
	s := &simServer{Sim: sim, url: url}
	s.srv = &http.Server{Handler: s.record(sim.Handler()), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// close stops the server and the simulator.
func (s *simServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Sim.Close()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

// client returns a Kie client of the simulated account: one per simulated process, each with its
// own connections.
func (s *simServer) client() (*kie.Client, error) {
	c, err := kie.New(kie.Options{APIKey: simKey, BaseURL: s.url, UploadURL: s.url, HTTPClient: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute},
	}})
	if err != nil {
		return nil, fmt.Errorf("bench: kie client: %w", err)
	}
	return c, nil
}

// setStorm turns the 429 storm on or off and records its span.
func (s *simServer) setStorm(on bool) {
	s.mu.Lock()
	if on {
		s.storm = interval{from: time.Now()}
	}
	s.mu.Unlock()
	s.SetStorm(on)
	if !on {
		s.mu.Lock()
		s.storm.to = time.Now()
		s.mu.Unlock()
	}
}

// record notes the arrival time and Kie code of every generate answer. The arrival time is taken
// before the simulator sees the call, so a 429 that arrived during the storm is counted as the
// storm's even when it is answered just after.
func (s *simServer) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != generatePath {
			next.ServeHTTP(w, r)
			return
		}
		at := time.Now()
		rec := &capture{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		code := rec.status
		var env struct {
			Code *int `json:"code"`
		}
		if json.Unmarshal(rec.body.Bytes(), &env) == nil && env.Code != nil {
			code = *env.Code
		}
		s.mu.Lock()
		s.answers = append(s.answers, answer{at: at, code: code})
		s.mu.Unlock()
	})
}

// figures reads the simulator's counters and records into Figures (the client's outcome, times
// and latencies are the caller's).
func (s *simServer) figures(o Options) Figures {
	st := s.Stats()
	var accepted []time.Time
	for _, t := range s.Tasks() {
		accepted = append(accepted, t.CreateTime)
	}
	s.mu.Lock()
	answers := append([]answer(nil), s.answers...)
	storm := s.storm
	s.mu.Unlock()
	if !storm.from.IsZero() && storm.to.IsZero() {
		storm.to = time.Now()
	}
	f := Figures{
		Accepted:        st.Accepted,
		RateLimited:     st.Answers[kiesim.AnswerKey{Endpoint: kiesim.EndpointGenerate, Code: 429}],
		PollRateLimited: st.Answers[kiesim.AnswerKey{Endpoint: kiesim.EndpointRecordInfo, Code: 429}],
		RecordInfoCalls: st.Requests[kiesim.EndpointRecordInfo],
		MaxInWindow:     st.MaxInWindow,
		PaidTwice:       st.LiveDuplicates,
		LateRateLimited: lateRateLimited(answers, o.Scale.Window, storm),
	}
	f.Utilisation, f.Windows = utilisation(accepted, o.Scale.Limit, o.Scale.Window, storm)
	f.SpanUtilisation = spanUtilisation(accepted, o.Scale.Limit, o.Scale.Window, storm)
	return f
}

// completions maps each finished task to its completion time.
func (s *simServer) completions() map[string]time.Time {
	out := map[string]time.Time{}
	for _, t := range s.Tasks() {
		if !t.CompleteTime.IsZero() {
			out[t.TaskID] = t.CompleteTime
		}
	}
	return out
}

// latencies are the times from each task's completion to its image archived (done maps task ids
// to that time); tasks without either are left out.
func latencies(complete, done map[string]time.Time) []time.Duration {
	var out []time.Duration
	for id, d := range done {
		if c, ok := complete[id]; ok {
			out = append(out, d.Sub(c))
		}
	}
	return out
}

// capture keeps a copy of an answer's status and (small, JSON) body.
type capture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capture) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.body.Len() < 4096 {
		c.body.Write(b)
	}
	return c.ResponseWriter.Write(b)
}

// timeline drives what happens to the account during a run: the storm (from half the batch
// accepted, for its length), the maintenance window (from a sixth of the batch accepted), and
// the batch loaded behind the main one (one window after the start).
type timeline struct {
	sim *simServer

	storm, maint phase
	focusAt      time.Time // when the batch behind is due; zero when there is none
	focus        func()    // loads it
	focusStart   time.Time // when its load started
	focusFired   bool
}

// phase is one period of trouble: it starts when after calls have been accepted and lasts len.
type phase struct {
	after int
	len   time.Duration
	set   func(on bool)
	start time.Time
	done  bool
}

func newTimeline(o Options, c Case, sim *simServer, start time.Time, focus func()) *timeline {
	tl := &timeline{sim: sim}
	n := o.jobsOf(c)
	if c.Storm {
		tl.storm = phase{after: n / 2, len: o.Storm, set: sim.setStorm}
	}
	if c.Maintenance > 0 {
		tl.maint = phase{after: max(n/6, 1), len: c.Maintenance, set: sim.SetMaintenance}
	}
	if c.Behind.Jobs > 0 {
		tl.focusAt, tl.focus = start.Add(o.Scale.Window), focus
	}
	return tl
}

// tick advances the timeline; the run's progress loop calls it often.
func (tl *timeline) tick(now time.Time) {
	accepted := -1
	for _, p := range []*phase{&tl.storm, &tl.maint} {
		if p.set == nil || p.done {
			continue
		}
		if p.start.IsZero() {
			if accepted < 0 {
				accepted = tl.sim.Stats().Accepted
			}
			if accepted >= p.after {
				p.start = now
				p.set(true)
			}
		} else if now.Sub(p.start) >= p.len {
			p.set(false)
			p.done = true
		}
	}
	if !tl.focusAt.IsZero() && !tl.focusFired && !now.Before(tl.focusAt) {
		tl.focusFired, tl.focusStart = true, time.Now()
		tl.focus()
	}
}

// pending says the batch behind is still to be loaded.
func (tl *timeline) pending() bool { return !tl.focusAt.IsZero() && !tl.focusFired }

// end switches off any trouble still on.
func (tl *timeline) end() {
	for _, p := range []*phase{&tl.storm, &tl.maint} {
		if p.set != nil && !p.done && !p.start.IsZero() {
			p.set(false)
			p.done = true
		}
	}
}

// tickEvery is how often a run checks its progress and its timeline.
const tickEvery = 20 * time.Millisecond

var errTimeout = errors.New("bench: the batch did not finish in time")
