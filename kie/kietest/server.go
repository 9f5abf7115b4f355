package kietest

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Server is a simulator on a loopback httptest server. The API answers only under APIURL and
// the upload endpoints only under UploadURL, mirroring Kie's two hosts: a client that sends an
// upload to the API host, or builds an absolute path wrongly, gets 404.
type Server struct {
	*Sim
	URL       string // the root; files are served under URL + "/files/"
	APIURL    string // base for the API, in place of https://api.kie.ai
	UploadURL string // base for uploads, in place of https://kieai.redpandaai.co
	Key       string // the accepted bearer key at start (SetKey changes the Sim, not this field)
}

// NewServer starts a simulator configured by o; it is closed when the test ends.
func NewServer(tb testing.TB, o Options) *Server {
	tb.Helper()
	sim := New(o)
	mux := http.NewServeMux()
	sim.mountAPI(mux, "/kie-api")
	sim.mountUpload(mux, "/kie-upload")
	mux.Handle(pathFiles, http.HandlerFunc(sim.serveFile))
	srv := httptest.NewServer(mux)
	sim.Update(func(o *Options) {
		if o.PublicURL == "" {
			o.PublicURL = srv.URL
		}
	})
	tb.Cleanup(func() {
		sim.Close() // first: it releases handlers waiting on DownloadDelay
		srv.Close()
	})
	return &Server{Sim: sim, URL: srv.URL, APIURL: srv.URL + "/kie-api", UploadURL: srv.URL + "/kie-upload", Key: sim.o.Key}
}

// String keeps the key out of %v output.
func (s *Server) String() string { return "kietest.Server{URL:" + s.URL + "}" }

// GoString keeps the key out of %#v output.
func (s *Server) GoString() string { return s.String() }
