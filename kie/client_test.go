package kie_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
)

func TestRequests(t *testing.T) {
	f := newFake(t)
	c := f.client(t)
	ctx := context.Background()
	img := pngBytes(t)
	tol := 1
	no := false

	checkCommon := func(t *testing.T, s seen, method, path string, withBody bool) {
		t.Helper()
		if s.method != method || s.path != path {
			t.Errorf("request %s %s, want %s %s", s.method, s.path, method, path)
		}
		if got := s.header.Get("Authorization"); got != "Bearer "+testKey {
			t.Errorf("Authorization = %q, want the bearer key", got)
		}
		if got := s.header.Get("User-Agent"); got != "kontextq/"+kie.Version {
			t.Errorf("User-Agent = %q", got)
		}
		if got := s.header.Get("Accept"); got != "application/json" {
			t.Errorf("Accept = %q", got)
		}
		if withBody && !strings.HasPrefix(s.header.Get("Content-Type"), "application/json") {
			t.Errorf("Content-Type = %q, want application/json", s.header.Get("Content-Type"))
		}
		if !withBody && len(s.body) != 0 {
			t.Errorf("a %s sent a body: %q", method, s.body)
		}
	}
	jsonBody := func(t *testing.T, s seen) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(s.body, &m); err != nil {
			t.Fatalf("body %q is not JSON: %v", s.body, err)
		}
		return m
	}

	t.Run("Generate sends exactly the set fields", func(t *testing.T) {
		f.answer(reply{status: 200, body: envelope(200, "success", `{"taskId":"t1"}`)})
		req := kie.GenerateRequest{Prompt: "make it blue", InputImage: "https://x.example/a.png", Model: "flux-kontext-max",
			SafetyTolerance: &tol, EnableTranslation: &no, CallBackURL: "https://me.example/cb"}
		if _, err := c.Generate(ctx, req); err != nil {
			t.Fatal(err)
		}
		s := f.last(t)
		checkCommon(t, s, "POST", "/kie-api/api/v1/flux/kontext/generate", true)
		want := map[string]any{"prompt": "make it blue", "inputImage": "https://x.example/a.png", "model": "flux-kontext-max",
			"safetyTolerance": float64(1), "enableTranslation": false, "callBackUrl": "https://me.example/cb"}
		if got := jsonBody(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("body %v, want %v (an edit must not send a default aspectRatio)", got, want)
		}
	})

	t.Run("RecordInfo escapes the task id", func(t *testing.T) {
		id := "a b&c=d/é?#"
		f.answer(reply{status: 200, body: envelope(200, "success", `{"taskId":`+mustJSON(id)+`,"successFlag":0}`)})
		r, err := c.RecordInfo(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.TaskID != id || r.SuccessFlag != kie.Generating {
			t.Errorf("record %+v", r)
		}
		s := f.last(t)
		checkCommon(t, s, "GET", "/kie-api/api/v1/flux/kontext/record-info", false)
		q, err := urlQuery(s.rawQuery)
		if err != nil || q != id {
			t.Errorf("server read taskId %q (%v) from %q, want %q", q, err, s.rawQuery, id)
		}
	})

	t.Run("RecordInfo refuses another task's record", func(t *testing.T) {
		f.answer(reply{status: 200, body: envelope(200, "success", `{"taskId":"other","successFlag":1}`)})
		_, err := c.RecordInfo(ctx, "mine")
		var e *kie.Error
		if !errors.As(err, &e) || e.Code != 0 || !kie.IsTransient(err) {
			t.Errorf("error = %v, want a Code 0 *kie.Error", err)
		}
	})

	t.Run("Credits", func(t *testing.T) {
		for _, data := range []string{`12.25`, `"12.25"`} {
			f.answer(reply{status: 200, body: envelope(200, "success", data)})
			v, err := c.Credits(ctx)
			if err != nil || v != 12.25 {
				t.Errorf("data %s: Credits = %v, %v; want 12.25", data, v, err)
			}
		}
		checkCommon(t, f.last(t), "GET", "/kie-api/api/v1/chat/credit", false)
		f.answer(reply{status: 200, body: envelope(200, "success", `"lots"`)})
		if _, err := c.Credits(ctx); !kie.IsTransient(err) {
			t.Errorf("non-numeric credits: error %v, want a transient decoding error", err)
		}
	})

	t.Run("DownloadURL", func(t *testing.T) {
		f.answer(reply{status: 200, body: envelope(200, "success", `"https://dl.example/x"`)})
		if _, err := c.DownloadURL(ctx, "https://files.example/r.png"); err != nil {
			t.Fatal(err)
		}
		s := f.last(t)
		checkCommon(t, s, "POST", "/kie-api/api/v1/common/download-url", true)
		if got := jsonBody(t, s); fmt.Sprint(got) != fmt.Sprint(map[string]any{"url": "https://files.example/r.png"}) {
			t.Errorf("body %v", got)
		}
	})

	t.Run("UploadBase64 sends plain base64", func(t *testing.T) {
		f.answer(reply{status: 200, body: uploadOK})
		if _, err := c.UploadBase64(ctx, img, "in.png", "kontextq/in"); err != nil {
			t.Fatal(err)
		}
		s := f.last(t)
		checkCommon(t, s, "POST", "/kie-upload/api/file-base64-upload", true)
		m := jsonBody(t, s)
		data, err := base64.StdEncoding.DecodeString(fmt.Sprint(m["base64Data"]))
		if err != nil || !bytes.Equal(data, img) {
			t.Errorf("base64Data does not decode to the file (%v)", err)
		}
		if m["fileName"] != "in.png" || m["uploadPath"] != "kontextq/in" {
			t.Errorf("body fields %v", m)
		}
	})

	t.Run("UploadURL", func(t *testing.T) {
		f.answer(reply{status: 200, body: uploadOK})
		if _, err := c.UploadURL(ctx, "https://example.com/a.png", "a.png", "kontextq"); err != nil {
			t.Fatal(err)
		}
		s := f.last(t)
		checkCommon(t, s, "POST", "/kie-upload/api/file-url-upload", true)
		want := map[string]any{"fileUrl": "https://example.com/a.png", "fileName": "a.png", "uploadPath": "kontextq"}
		if got := jsonBody(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("body %v, want %v", got, want)
		}
	})

	t.Run("UploadStream sends a multipart form", func(t *testing.T) {
		f.answer(reply{status: 200, body: uploadOK})
		if _, err := c.UploadStream(ctx, bytes.NewReader(img), `we"ird name.png`, "kontextq/in"); err != nil {
			t.Fatal(err)
		}
		s := f.last(t)
		if s.method != "POST" || s.path != "/kie-upload/api/file-stream-upload" || s.header.Get("Authorization") != "Bearer "+testKey {
			t.Errorf("request %s %s", s.method, s.path)
		}
		if s.contentLength != -1 {
			t.Errorf("Content-Length %d: the body was buffered, not streamed", s.contentLength)
		}
		fields, files := parseMultipart(t, s)
		if fields["uploadPath"] != "kontextq/in" || fields["fileName"] != `we"ird name.png` {
			t.Errorf("fields %v", fields)
		}
		file, ok := files["file"]
		if !ok || !bytes.Equal(file.data, img) || file.name != `we"ird name.png` || file.ctype != "image/png" {
			t.Errorf("file part %+v", file)
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func urlQuery(raw string) (string, error) {
	r, err := http.NewRequest("GET", "http://x/?"+raw, nil)
	if err != nil {
		return "", err
	}
	return r.URL.Query().Get("taskId"), nil
}

type filePart struct {
	name, ctype string
	data        []byte
}

func parseMultipart(t *testing.T, s seen) (map[string]string, map[string]filePart) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(s.header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		t.Fatalf("Content-Type %q: %v", s.header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bytes.NewReader(s.body), params["boundary"])
	fields, files := map[string]string{}, map[string]filePart{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(p)
		if p.FileName() != "" {
			files[p.FormName()] = filePart{p.FileName(), p.Header.Get("Content-Type"), data}
		} else {
			fields[p.FormName()] = string(data)
		}
	}
	return fields, files
}

// gatedReader yields first, then waits for the server to have received part of it before
// yielding the rest: a client that buffered the whole file before sending would never get past
// the gate.
type gatedReader struct {
	first, rest []byte
	gate        <-chan struct{}
	opened      bool
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if len(g.first) > 0 {
		n := copy(p, g.first)
		g.first = g.first[n:]
		return n, nil
	}
	if !g.opened {
		select {
		case <-g.gate:
		case <-time.After(10 * time.Second):
			return 0, errors.New("the server never received the first chunk: the upload is buffered")
		}
		g.opened = true
	}
	if len(g.rest) > 0 {
		n := copy(p, g.rest)
		g.rest = g.rest[n:]
		return n, nil
	}
	return 0, io.EOF
}

func TestUploadStreamStreams(t *testing.T) {
	// The first chunk is far larger than any transport buffer, so most of it must be on the
	// wire before the reader gives the rest.
	first := bytes.Repeat([]byte("A"), 256<<10)
	rest := bytes.Repeat([]byte("B"), 4096)
	want := append(append([]byte{}, first...), rest...)
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var got []byte
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() != "file" {
				continue
			}
			head := make([]byte, 128<<10)
			if _, err := io.ReadFull(p, head); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			close(gate) // half the file arrived while the reader still holds the rest
			tail, _ := io.ReadAll(p)
			got = append(head, tail...)
		}
		if !bytes.Equal(got, want) {
			http.Error(w, "file differs", 400)
			return
		}
		_, _ = io.WriteString(w, uploadOK)
	}))
	defer srv.Close()
	c, err := kie.New(kie.Options{APIKey: testKey, UploadURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadStream(context.Background(), &gatedReader{first: first, rest: rest, gate: gate}, "", "p"); err != nil {
		t.Fatal(err)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		r.n--
		return copy(p, "data"), nil
	}
	return 0, errors.New("disk on fire")
}

func TestUploadStreamReaderFails(t *testing.T) {
	f := newFake(t)
	f.answer(reply{status: 200, body: uploadOK})
	c := f.client(t)
	_, err := c.UploadStream(context.Background(), &failingReader{n: 3}, "x.png", "p")
	if err == nil {
		t.Fatal("an upload whose file could not be read succeeded")
	}
	if kie.IsTransient(err) {
		t.Errorf("a local read failure %v is reported as transient", err)
	}
}

func TestUploadStreamAnswerBeforeBodyDoesNotHang(t *testing.T) {
	// The server refuses at once without reading the body; the client must return and stop
	// reading the (endless) file.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(401)
		_, _ = io.WriteString(w, envelope(401, "bad key", ""))
	}))
	defer srv.Close()
	c, err := kie.New(kie.Options{APIKey: testKey, UploadURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.UploadStream(ctx, endless{}, "x.bin", "p")
	if err == nil {
		t.Fatal("upload of an endless file to a refusing server succeeded")
	}
	if !kie.IsBadKey(err) && !kie.IsTransient(err) {
		t.Errorf("error %v: want the 401, or at worst a broken connection", err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestFetch(t *testing.T) {
	f := newFake(t)
	c := f.client(t)
	img := pngBytes(t)

	f.answer(reply{status: 200, ctype: "image/png", body: string(img)})
	resp, err := c.Fetch(context.Background(), f.srv.URL+"/files/r.png?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, img) {
		t.Error("Fetch returned other bytes than the server sent")
	}
	s := f.last(t)
	if a := s.header.Get("Authorization"); a != "" {
		t.Errorf("Fetch sent Authorization %q to the file host", a)
	}
	if ua := s.header.Get("User-Agent"); ua != "kontextq/"+kie.Version {
		t.Errorf("Fetch sent User-Agent %q", ua)
	}
	if s.path != "/files/r.png" || s.rawQuery != "token=abc" {
		t.Errorf("Fetch requested %s?%s", s.path, s.rawQuery)
	}

	f.answer(reply{status: 503, ctype: "text/plain", body: "busy", header: http.Header{"Retry-After": {"30"}}})
	_, err = c.Fetch(context.Background(), f.srv.URL+"/files/r.png")
	var e *kie.Error
	if !errors.As(err, &e) || e.Op != "download" || e.HTTPStatus != 503 || !kie.IsTransient(err) || kie.RetryAfter(err) != 30*time.Second {
		t.Errorf("error %#v, want a transient download *kie.Error with HTTP 503 and Retry-After 30s", err)
	}

	for _, bad := range []string{"", "/files/r.png", "ftp://x/r.png", "http://", "http://[::1"} {
		if _, err := c.Fetch(context.Background(), bad); err == nil {
			t.Errorf("Fetch(%q) succeeded", bad)
		}
	}

	// Fetch needs no key: the file host is public.
	noKey := f.clientWith(t, kie.Options{})
	f.answer(reply{status: 200, ctype: "image/png", body: string(img)})
	resp, err = noKey.Fetch(context.Background(), f.srv.URL+"/files/r.png")
	if err != nil {
		t.Fatalf("Fetch without a key: %v", err)
	}
	resp.Body.Close()
}

func TestEmptyKeyFailsWithoutNetwork(t *testing.T) {
	f := newFake(t)
	c := f.clientWith(t, kie.Options{})
	for _, m := range methods(t) {
		if m.fetch {
			continue
		}
		err := m.call(context.Background(), c, f.srv.URL)
		var e *kie.Error
		if !errors.As(err, &e) || !kie.IsBadKey(err) || e.HTTPStatus != 0 {
			t.Errorf("%s with no key: error %v, want a bad-key *kie.Error with no HTTP status", m.name, err)
		}
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d requests reached the server without a key", n)
	}
}

func TestOversizedAnswer(t *testing.T) {
	f := newFake(t)
	c := f.clientWith(t, kie.Options{APIKey: testKey, MaxResponseBytes: 100})
	big := envelope(200, "success", `{"taskId":"`+strings.Repeat("x", 200)+`"}`)

	f.answer(reply{status: 200, body: big})
	_, err := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"})
	var e *kie.Error
	if !errors.As(err, &e) || e.Code != 0 || !strings.Contains(e.Msg, "larger than 100 bytes") {
		t.Errorf("oversized 200: error %v, want Code 0 naming the limit", err)
	}

	f.answer(reply{status: 502, ctype: "text/html", body: strings.Repeat("<p>bad gateway</p>", 50)})
	_, err = c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"})
	if !errors.As(err, &e) || e.Code != 502 || !kie.IsTransient(err) {
		t.Errorf("oversized 502: error %v, want Code 502", err)
	}

	// Exactly at the limit is fine.
	exact := envelope(200, "success", `{"taskId":"t"}`)
	c = f.clientWith(t, kie.Options{APIKey: testKey, MaxResponseBytes: int64(len(exact))})
	f.answer(reply{status: 200, body: exact})
	if _, err := c.Generate(context.Background(), kie.GenerateRequest{Prompt: "p"}); err != nil {
		t.Errorf("answer of exactly MaxResponseBytes: %v", err)
	}
}

func TestNetworkFailuresAreTransient(t *testing.T) {
	gen := func(c *kie.Client, ctx context.Context) error {
		_, err := c.Generate(ctx, kie.GenerateRequest{Prompt: "p"})
		return err
	}
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: "http://" + addr})
		err = gen(c, context.Background())
		checkHelpers(t, err, "IsTransient")
		if !strings.Contains(err.Error(), "kie generate") {
			t.Errorf("error %q does not name the operation", err)
		}
	})
	t.Run("connection closed before the answer", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}))
		defer srv.Close()
		c, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: srv.URL})
		checkHelpers(t, gen(c, context.Background()), "IsTransient")
	})
	t.Run("answer cut short", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"code":200,"msg":"succ`)
			conn, buf, _ := w.(http.Hijacker).Hijack()
			_ = buf.Flush()
			conn.Close()
		}))
		defer srv.Close()
		c, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: srv.URL})
		checkHelpers(t, gen(c, context.Background()), "IsTransient")
	})
	t.Run("client timeout and context deadline", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		c, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: srv.URL, HTTPClient: &http.Client{Timeout: 50 * time.Millisecond}})
		checkHelpers(t, gen(c, context.Background()), "IsTransient")

		c, _ = kie.New(kie.Options{APIKey: testKey, BaseURL: srv.URL})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		checkHelpers(t, gen(c, ctx), "IsTransient")
	})
	t.Run("cancelled context is not transient", func(t *testing.T) {
		f := newFake(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := gen(f.client(t), ctx)
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		checkHelpers(t, err)
	})
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		o    kie.Options
		want string // in the error
	}{
		{"bad scheme", kie.Options{BaseURL: "ftp://api.kie.ai"}, "BaseURL"},
		{"no host", kie.Options{UploadURL: "https://"}, "UploadURL"},
		{"relative", kie.Options{BaseURL: "api.kie.ai"}, "BaseURL"},
		{"query", kie.Options{BaseURL: "https://api.kie.ai/?x=1"}, "BaseURL"},
		{"credentials in URL", kie.Options{UploadURL: "https://u:" + testKey + "@kie.example"}, "UploadURL"},
		{"unparsable", kie.Options{BaseURL: "http://[::1"}, "BaseURL"},
		{"key with newline", kie.Options{APIKey: testKey + "\n"}, "APIKey"},
		{"key with space", kie.Options{APIKey: "Bearer " + testKey}, "APIKey"},
		{"user agent with newline", kie.Options{UserAgent: "x\r\nEvil: 1"}, "UserAgent"},
		{"negative limit", kie.Options{MaxResponseBytes: -1}, "MaxResponseBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := kie.New(tt.o)
			if err == nil {
				t.Fatalf("New accepted %s: %v", tt.name, c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
	c, err := kie.New(kie.Options{})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if s := c.String(); !strings.Contains(s, kie.DefaultBaseURL) || !strings.Contains(s, kie.DefaultUploadURL) {
		t.Errorf("defaults not applied: %s", s)
	}
}

// TestKeyNeverShown checks every place a key could leak: fmt verbs on the client and its
// options (directly and nested), slog output, and the error of every failing call, including
// answers that echo the Authorization header back.
func TestKeyNeverShown(t *testing.T) {
	f := newFake(t)
	opts := kie.Options{APIKey: testKey, BaseURL: f.srv.URL + "/kie-api", UploadURL: f.srv.URL + "/kie-upload"}
	c, err := kie.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	assertNoKey := func(t *testing.T, what, s string) {
		t.Helper()
		if strings.Contains(s, testKey) {
			t.Errorf("%s shows the key: %s", what, s)
		}
	}

	type holder struct {
		Opts   kie.Options
		Client *kie.Client
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		assertNoKey(t, verb, fmt.Sprintf(verb+" "+verb+" "+verb+" "+verb, c, opts, &opts, holder{opts, c}))
	}
	assertNoKey(t, "String", c.String()+opts.String()+c.GoString()+opts.GoString())
	if !strings.Contains(fmt.Sprintf("%+v", opts), "[REDACTED]") {
		t.Errorf("%%+v of Options does not say a key is set: %+v", opts)
	}

	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("client", "client", c, "opts", opts, "optsPtr", &opts)
	}
	assertNoKey(t, "slog output", logs.String())

	// Answers that echo the key back, in every form.
	echo := func(w http.ResponseWriter, r *http.Request, status int, envelopeBody bool) {
		auth := r.Header.Get("Authorization")
		if r.Header.Get("Authorization") == "" {
			auth = "Bearer " + testKey // Fetch sends none; pretend the host knows it anyway
		}
		w.WriteHeader(status)
		if envelopeBody {
			_, _ = io.WriteString(w, envelope(status%1000, "invalid key: "+auth+" (key "+strings.Repeat("z", 300)+testKey+")", ""))
		} else {
			_, _ = io.WriteString(w, strings.Repeat("y", 190)+auth+strings.Repeat(" ", 600)+auth)
		}
	}
	for _, form := range []struct {
		name   string
		status int
		env    bool
	}{{"HTTP 200 body code", 200, true}, {"HTTP 401 envelope", 401, true}, {"HTTP 403 text", 403, false}, {"HTTP 200 text", 200, false}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := form.status
			if st == 200 && form.env {
				// body code 401 under HTTP 200
				w.WriteHeader(200)
				_, _ = io.WriteString(w, envelope(401, "invalid key "+r.Header.Get("Authorization"), ""))
				return
			}
			echo(w, r, st, form.env)
		}))
		ec, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: srv.URL, UploadURL: srv.URL})
		for _, m := range methods(t) {
			err := m.call(context.Background(), ec, srv.URL)
			if err == nil {
				if !(m.fetch && form.status == 200) {
					t.Errorf("%s/%s: no error", form.name, m.name)
				}
				continue
			}
			assertNoKey(t, form.name+"/"+m.name+" error", fmt.Sprintf("%v %+v %#v", err, err, err))
		}
		srv.Close()
	}

	// Transport failures and the no-key path.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	dc, _ := kie.New(kie.Options{APIKey: testKey, BaseURL: dead.URL, UploadURL: dead.URL})
	for _, m := range methods(t) {
		err := m.call(context.Background(), dc, dead.URL)
		assertNoKey(t, "transport error of "+m.name, fmt.Sprintf("%v %+v %#v", err, err, err))
	}
	_, err = c.Fetch(context.Background(), "http://[::1")
	assertNoKey(t, "url error", fmt.Sprint(err))
}
