package kiesim

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Server is a simulator on a loopback HTTP server. The API answers only under APIURL and the
// upload endpoints only under UploadURL, mirroring Kie's two hosts: a client that sends an
// upload to the API host, or builds an absolute path wrongly, gets 404.
type Server struct {
	*Sim
	URL       string // the root; files are served under URL + "/files/"
	APIURL    string // base for the API, in place of https://api.kie.ai
	UploadURL string // base for uploads, in place of https://kieai.redpandaai.co
	Key       string // the accepted bearer key at start (SetKey changes the Sim, not this field)

	srv *http.Server
	ln  net.Listener
}

// Start serves a simulator configured by o on a free loopback port. Close stops it.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sim := New(o)
	mux := http.NewServeMux()
	sim.mountAPI(mux, "/kie-api")
	sim.mountUpload(mux, "/kie-upload")
	mux.Handle(pathFiles, http.HandlerFunc(sim.serveFile))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	url := "http://" + ln.Addr().String()
	sim.Update(func(o *Options) {
		if o.PublicURL == "" {
			o.PublicURL = url
		}
	})
	go func() { _ = srv.Serve(ln) }() // returns http.ErrServerClosed on Close
	return &Server{Sim: sim, URL: url, APIURL: url + "/kie-api", UploadURL: url + "/kie-upload", Key: sim.o.Key, srv: srv, ln: ln}, nil
}

// Close releases handlers waiting on DownloadDelay, then stops the server and its connections.
func (s *Server) Close() {
	s.Sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

// String keeps the key out of %v output.
func (s *Server) String() string { return "kiesim.Server{URL:" + s.URL + "}" }

// GoString keeps the key out of %#v output.
func (s *Server) GoString() string { return s.String() }
