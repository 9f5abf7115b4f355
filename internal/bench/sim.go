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

// startSim serves a simulator configured for o on 127.0.0.1:0.
func startSim(o Options) (*simServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listening for the simulator: %w", err)
	}
	url := "http://" + ln.Addr().String()
	sim := kiesim.New(kiesim.Options{
		Key:              simKey,
		Seed:             o.Seed,
		PublicURL:        url,
		GenerateLimit:    o.Limit,
		GenerateWindow:   o.Window,
		RecordInfoLimit:  kiePollEvents,
		RecordInfoWindow: o.compress(kiePollPer),
		ErrorSignal:      kiesim.SignalEither,
		GenTimeMedian:    o.GenTime,
	})
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

// figures reads the simulator's counters and records into Figures (Jobs, Archived, Failed,
// Elapsed and Ideal are the caller's).
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
		MaxInWindow:     st.MaxInWindow,
		LateRateLimited: lateRateLimited(answers, o.Window, storm),
	}
	f.Utilisation, f.Windows = utilisation(accepted, o.Limit, o.Window, storm)
	f.SpanUtilisation = spanUtilisation(accepted, o.Limit, o.Window, storm)
	return f
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

// stormer starts the storm when half the batch has been accepted and ends it o.Storm later.
type stormer struct {
	sim   *simServer
	half  int
	len   time.Duration
	start time.Time
	done  bool
}

// tick advances the storm; it is called from the progress loop.
func (st *stormer) tick(now time.Time) {
	switch {
	case st == nil || st.done:
	case st.start.IsZero():
		if st.sim.Stats().Accepted >= st.half {
			st.start = now
			st.sim.setStorm(true)
		}
	case now.Sub(st.start) >= st.len:
		st.sim.setStorm(false)
		st.done = true
	}
}

var errTimeout = errors.New("bench: the batch did not finish in time")
