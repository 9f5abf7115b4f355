package kiesim

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names, as used in Stats.
const (
	EndpointGenerate     = "generate"
	EndpointRecordInfo   = "record-info"
	EndpointCredit       = "credit"
	EndpointDownloadURL  = "download-url"
	EndpointStreamUpload = "file-stream-upload"
	EndpointBase64Upload = "file-base64-upload"
	EndpointURLUpload    = "file-url-upload"
	EndpointFiles        = "files"
)

// Real paths, as Kie serves them.
const (
	pathGenerate     = "/api/v1/flux/kontext/generate"
	pathRecordInfo   = "/api/v1/flux/kontext/record-info"
	pathCredit       = "/api/v1/chat/credit"
	pathDownloadURL  = "/api/v1/common/download-url"
	pathStreamUpload = "/api/file-stream-upload"
	pathBase64Upload = "/api/file-base64-upload"
	pathURLUpload    = "/api/file-url-upload"
	pathFiles        = "/files/"
)

const (
	maxJSONBody   = 1 << 20
	maxUploadBody = 64 << 20
)

// Sim is one simulated Kie account: its key, credits, rate windows, tasks and files. All state
// lives in memory behind one mutex; task progress is computed from the clock when asked, so an
// idle simulator costs nothing and a test moves time instead of waiting for it.
type Sim struct {
	mu              sync.Mutex
	o               Options
	credits         float64
	maintenance     bool
	featureDisabled bool
	storm           bool
	streams         map[string]uint64 // draws so far per random stream

	tasks    map[string]*task
	order    []*task
	uploads  map[string]*upload   // by filePath
	directs  map[string]*direct   // by token
	seen     map[[32]byte][]*task // accepted tasks by canonical request body
	genWin   window
	recWin   window
	counters Stats

	pending map[*delivery]struct{}
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	client  *http.Client  // callbacks, url uploads and edit inputs
	fetches chan struct{} // one slot per edit input being read
}

// New returns a simulator configured by o (see Options for defaults).
func New(o Options) *Sim {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Sim{
		o:        o,
		credits:  o.Credits,
		streams:  map[string]uint64{},
		tasks:    map[string]*task{},
		uploads:  map[string]*upload{},
		directs:  map[string]*direct{},
		seen:     map[[32]byte][]*task{},
		counters: newStats(),
		pending:  map[*delivery]struct{}{},
		ctx:      ctx,
		cancel:   cancel,
		client:   &http.Client{},
		fetches:  make(chan struct{}, maxInputFetches),
	}
}

// Close stops pending callbacks and in-flight deliveries and waits for them. The simulator
// still answers requests afterwards but sends nothing more.
func (s *Sim) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for d := range s.pending {
		d.timer.Stop()
	}
	clear(s.pending)
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Handler serves the API, upload and file endpoints at Kie's real paths.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	s.mountAPI(mux, "")
	s.mountUpload(mux, "")
	mux.Handle(pathFiles, http.HandlerFunc(s.serveFile))
	return mux
}

func (s *Sim) mountAPI(mux *http.ServeMux, prefix string) {
	for _, ep := range []endpoint{
		{EndpointGenerate, pathGenerate, http.MethodPost, false, s.generate},
		{EndpointRecordInfo, pathRecordInfo, http.MethodGet, false, s.recordInfo},
		{EndpointCredit, pathCredit, http.MethodGet, false, s.credit},
		{EndpointDownloadURL, pathDownloadURL, http.MethodPost, false, s.downloadURL},
	} {
		mux.Handle(prefix+ep.path, s.serveAPI(ep))
	}
}

func (s *Sim) mountUpload(mux *http.ServeMux, prefix string) {
	for _, ep := range []endpoint{
		{EndpointStreamUpload, pathStreamUpload, http.MethodPost, true, s.streamUpload},
		{EndpointBase64Upload, pathBase64Upload, http.MethodPost, true, s.base64Upload},
		{EndpointURLUpload, pathURLUpload, http.MethodPost, true, s.urlUpload},
	} {
		mux.Handle(prefix+ep.path, s.serveAPI(ep))
	}
}

// Update changes options at run time (rates, fault knobs, clock). Credits already granted are
// not reset: use SetCredits for the balance.
func (s *Sim) Update(f func(*Options)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.o
	o.CallbackRetryDelays = append([]time.Duration(nil), o.CallbackRetryDelays...)
	f(&o)
	s.o = o.withDefaults()
}

// SetMaintenance makes every API and upload call answer 455 while on.
func (s *Sim) SetMaintenance(on bool) { s.set(func() { s.maintenance = on }) }

// SetCredits sets the remaining balance.
func (s *Sim) SetCredits(c float64) { s.set(func() { s.credits = c }) }

// SetKey replaces the accepted key: the old one now gets 401, as after a revocation.
func (s *Sim) SetKey(key string) { s.set(func() { s.o.Key = key }) }

// SetFeatureDisabled makes generate answer 505 while on.
func (s *Sim) SetFeatureDisabled(on bool) { s.set(func() { s.featureDisabled = on }) }

// SetStorm makes every generate answer 429 while on, as during a 429 storm.
func (s *Sim) SetStorm(on bool) { s.set(func() { s.storm = on }) }

// Credits is the remaining balance.
func (s *Sim) Credits() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.credits
}

func (s *Sim) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// String keeps the key out of %v output of a Sim (and of a Server, which embeds it).
func (s *Sim) String() string { return "kiesim.Sim" }

// GoString keeps the key out of %#v output.
func (s *Sim) GoString() string { return "kiesim.Sim" }

// endpoint is one API or upload route; handle runs after the gate (UA, auth, maintenance,
// transient faults) with the body already read.
type endpoint struct {
	name   string
	path   string
	method string
	upload bool
	handle func(r *http.Request, body []byte) answer
}

// answer is what a handler decides; write turns it into the envelope in the configured form.
type answer struct {
	code int
	msg  string
	data any
	// httpOnly forces the error into the HTTP status (gateway-level answers such as 405).
	httpOnly bool
}

func success(data any) answer { return answer{code: 200, msg: "success", data: data} }

func fail(code int, msg string) answer { return answer{code: code, msg: msg} }

func (s *Sim) serveAPI(ep endpoint) http.Handler {
	limit := int64(maxJSONBody)
	if ep.upload {
		limit = maxUploadBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.countRequest(ep.name)
		if !s.userAgentOK(r) {
			s.refuseUserAgent(w, ep.name)
			return
		}
		if r.Method != ep.method {
			s.write(w, ep, answer{code: http.StatusMethodNotAllowed, msg: "method not allowed", httpOnly: true})
			return
		}
		if a, pass := s.gate(r); !pass {
			s.write(w, ep, a)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			s.write(w, ep, fail(badParam(ep), "request body could not be read"))
			return
		}
		s.write(w, ep, ep.handle(r, body))
	})
}

// badParam is the code for a malformed request: the API answers 422, the upload host 400.
func badParam(ep endpoint) int {
	if ep.upload {
		return 400
	}
	return 422
}

// gate applies what Kie checks before looking at a call: the key, maintenance, and transient
// server errors.
func (s *Sim) gate(r *http.Request) (answer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	auth := r.Header.Get("Authorization")
	scheme, key, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(s.o.Key)) != 1 {
		return fail(401, "You do not have access permissions: invalid or missing API key"), false
	}
	if s.maintenance {
		return fail(455, "The system is under maintenance, please try again later"), false
	}
	if s.rollLocked("transient") < s.o.TransientErrorRate {
		return fail(500, "Internal server error, please try again later"), false
	}
	return answer{}, true
}

func (s *Sim) userAgentOK(r *http.Request) bool {
	s.mu.Lock()
	allow := s.o.AllowDefaultUserAgent
	s.mu.Unlock()
	ua := r.Header.Get("User-Agent")
	return allow || (ua != "" && !strings.HasPrefix(ua, "Go-http-client"))
}

// refuseUserAgent answers as Kie's CDN does: plain text, not an envelope.
func (s *Sim) refuseUserAgent(w http.ResponseWriter, ep string) {
	s.countAnswer(ep, http.StatusForbidden)
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, "error code: 1010")
}

func (s *Sim) write(w http.ResponseWriter, ep endpoint, a answer) {
	status := http.StatusOK
	if a.code != 200 {
		s.mu.Lock()
		sig := s.o.ErrorSignal
		if sig == SignalEither {
			sig = SignalBody
			if s.rollLocked("signal") < 0.5 {
				sig = SignalHTTP
			}
		}
		s.mu.Unlock()
		if sig == SignalHTTP || a.httpOnly {
			status = a.code
		}
		s.mu.Lock()
		ra := s.o.RetryAfter
		s.mu.Unlock()
		if ra > 0 && (a.code == 429 || a.code == 455) {
			// Kie documents no Retry-After; a client must still honour one if it appears.
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ra.Seconds()))))
		}
	}
	s.countAnswer(ep.name, a.code)
	env := map[string]any{"code": a.code, "msg": a.msg, "data": a.data}
	if ep.upload {
		env["success"] = a.code == 200
	}
	b, err := json.Marshal(env)
	if err != nil {
		http.Error(w, "kiesim: encoding answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// rollLocked draws a uniform [0,1) number from one named stream. Streams are independent, so a
// knob that draws more often does not change the decisions of another.
func (s *Sim) rollLocked(stream string) float64 { return s.rngLocked(stream).Float64() }

func (s *Sim) rngLocked(stream string) *rand.Rand {
	n := s.streams[stream]
	s.streams[stream] = n + 1
	return seeded(s.o.Seed, stream, n)
}

func seeded(seed int64, stream string, n uint64) *rand.Rand {
	h := fnv.New64a()
	io.WriteString(h, stream)
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()^(n*0x9E3779B97F4A7C15)))
}

// baseURL is the absolute origin for links handed out in answers to r.
func (s *Sim) baseURL(r *http.Request) string {
	s.mu.Lock()
	pub := s.o.PublicURL
	s.mu.Unlock()
	if pub != "" {
		return strings.TrimRight(pub, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// now reads the clock; callers hold s.mu.
func (s *Sim) nowLocked() time.Time { return s.o.Now() }
