package kiesim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestGenerateValidation(t *testing.T) {
	const img = "https://example.com/in.png"
	tests := []struct {
		name string
		body string
		want int
	}{
		{"minimal", `{"prompt":"a cat"}`, 200},
		{"all fields", `{"prompt":"a cat","enableTranslation":false,"uploadCn":false,"aspectRatio":"1:1","outputFormat":"png","promptUpsampling":true,"model":"flux-kontext-max","safetyTolerance":6,"watermark":"w","callBackUrl":"http://127.0.0.1:1/cb"}`, 200},
		{"unknown field ignored", `{"prompt":"a cat","seed":42}`, 200},
		{"prompt missing", `{"aspectRatio":"1:1"}`, 422},
		{"prompt blank", `{"prompt":"   "}`, 422},
		{"prompt miscased key", `{"Prompt":"a cat"}`, 422},
		{"malformed JSON", `{"prompt":"a cat"`, 422},
		{"not an object", `["a cat"]`, 422},
		{"prompt wrong type", `{"prompt":42}`, 422},
		{"bool as string", `{"prompt":"a cat","promptUpsampling":"yes"}`, 422},
		{"tolerance as string", `{"prompt":"a cat","safetyTolerance":"2"}`, 422},
		{"model pro", `{"prompt":"a","model":"flux-kontext-pro"}`, 200},
		{"model unknown", `{"prompt":"a","model":"flux-kontext-ultra"}`, 422},
		{"format jpeg", `{"prompt":"a","outputFormat":"jpeg"}`, 200},
		{"format jpg", `{"prompt":"a","outputFormat":"jpg"}`, 422},
		{"format webp", `{"prompt":"a","outputFormat":"webp"}`, 422},
		{"ratio 2:1", `{"prompt":"a","aspectRatio":"2:1"}`, 422},
		{"ratio spaced", `{"prompt":"a","aspectRatio":"16 : 9"}`, 422},
		{"input image not a URL", `{"prompt":"a","inputImage":"./local.png"}`, 422},
		{"input image ftp", `{"prompt":"a","inputImage":"ftp://example.com/a.png"}`, 422},
		{"callback not a URL", `{"prompt":"a","callBackUrl":"example.com/cb"}`, 422},
		{"tolerance negative", `{"prompt":"a","safetyTolerance":-1}`, 500},
		{"tolerance 7 generation", `{"prompt":"a","safetyTolerance":7}`, 500},
		{"tolerance 3 edit", `{"prompt":"a","inputImage":"` + img + `","safetyTolerance":3}`, 500},
		{"tolerance 2 edit", `{"prompt":"a","inputImage":"` + img + `","safetyTolerance":2}`, 200},
		{"tolerance 0 edit", `{"prompt":"a","inputImage":"` + img + `","safetyTolerance":0}`, 200},
	}
	for _, r := range []string{"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"} {
		tests = append(tests, struct {
			name string
			body string
			want int
		}{"ratio " + r, `{"prompt":"a","aspectRatio":"` + r + `"}`, 200})
	}
	for tol := 0; tol <= 6; tol++ {
		tests = append(tests, struct {
			name string
			body string
			want int
		}{fmt.Sprintf("tolerance %d generation", tol), fmt.Sprintf(`{"prompt":"a","safetyTolerance":%d}`, tol), 200})
	}

	f := setup(t, Options{GenerateLimit: -1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.srv.Stats().Accepted
			rp := f.generate([]byte(tt.body))
			if rp.env.Code != tt.want {
				t.Fatalf("code = %d, want %d (%s)", rp.env.Code, tt.want, rp.raw)
			}
			created := f.srv.Stats().Accepted - before
			if (tt.want == 200) != (created == 1) {
				t.Errorf("tasks created = %d for code %d", created, tt.want)
			}
		})
	}
}

func TestGenerateNeedsJSONContentType(t *testing.T) {
	f := setup(t, Options{})
	rp := f.request(http.MethodPost, f.srv.APIURL+pathGenerate, []byte(`{"prompt":"a"}`), "text/plain", nil)
	if rp.env.Code != 422 {
		t.Fatalf("code = %d, want 422: %s", rp.env.Code, rp.raw)
	}
}

func TestMiscasedCallbackURLIsIgnored(t *testing.T) {
	f := setup(t, Options{})
	id := f.submit([]byte(`{"prompt":"a","callbackUrl":"http://127.0.0.1:1/cb"}`))
	ti, _ := f.srv.Task(id)
	if ti.CallbackURL != "" || f.srv.PendingCallbacks() != 0 {
		t.Fatalf("callbackUrl (wrong case) was honoured: %q", ti.CallbackURL)
	}
}

func TestAuthAndUserAgent(t *testing.T) {
	f := setup(t, Options{})
	body := []byte(`{"prompt":"a"}`)
	gen := func(edit func(*http.Request)) reply {
		return f.request(http.MethodPost, f.srv.APIURL+pathGenerate, body, "application/json", edit)
	}
	tests := []struct {
		name       string
		edit       func(*http.Request)
		wantStatus int
		wantCode   int
	}{
		{"good", nil, 200, 200},
		{"no key", func(r *http.Request) { r.Header.Del("Authorization") }, 200, 401},
		{"wrong key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, 200, 401},
		{"key without scheme", func(r *http.Request) { r.Header.Set("Authorization", f.srv.Key) }, 200, 401},
		{"lower-case scheme", func(r *http.Request) { r.Header.Set("Authorization", "bearer "+f.srv.Key) }, 200, 200},
		{"empty user agent", func(r *http.Request) { r.Header.Set("User-Agent", "") }, 403, 0},
		{"go default agent", func(r *http.Request) { r.Header.Set("User-Agent", "Go-http-client/1.1") }, 403, 0},
		{"go default agent, no key", func(r *http.Request) {
			r.Header.Set("User-Agent", "Go-http-client/2.0")
			r.Header.Del("Authorization")
		}, 403, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rp := gen(tt.edit)
			if rp.status != tt.wantStatus {
				t.Fatalf("HTTP %d, want %d: %s", rp.status, tt.wantStatus, rp.raw)
			}
			if tt.wantStatus == 403 {
				if string(rp.raw) != "error code: 1010" {
					t.Fatalf("403 body = %q, want the CDN's 1010 text", rp.raw)
				}
				return
			}
			if rp.env.Code != tt.wantCode {
				t.Fatalf("code %d, want %d", rp.env.Code, tt.wantCode)
			}
		})
	}

	t.Run("revoked key", func(t *testing.T) {
		old := f.srv.Key
		f.srv.SetKey("new-key")
		if rp := gen(nil); rp.env.Code != 401 {
			t.Fatalf("old key: code %d, want 401", rp.env.Code)
		}
		rp := gen(func(r *http.Request) { r.Header.Set("Authorization", "Bearer new-key") })
		if rp.env.Code != 200 {
			t.Fatalf("new key: code %d, want 200", rp.env.Code)
		}
		f.srv.SetKey(old)
	})

	t.Run("default agent allowed", func(t *testing.T) {
		f.srv.Update(func(o *Options) { o.AllowDefaultUserAgent = true })
		defer f.srv.Update(func(o *Options) { o.AllowDefaultUserAgent = false })
		if rp := gen(func(r *http.Request) { r.Header.Set("User-Agent", "") }); rp.env.Code != 200 {
			t.Fatalf("code %d, want 200: %s", rp.env.Code, rp.raw)
		}
	})
}

func TestErrorSignal(t *testing.T) {
	tests := []struct {
		signal             Signal
		wantHTTP, wantBody bool
	}{
		{SignalBody, false, true},
		{SignalHTTP, true, false},
		{SignalEither, true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.signal), func(t *testing.T) {
			f := setup(t, Options{})
			f.srv.Update(func(o *Options) { o.ErrorSignal = tt.signal })
			sawHTTP, sawBody := false, false
			for range 40 {
				rp := f.generate(map[string]any{"prompt": "a", "model": "nope"})
				if rp.env.Code != 422 {
					t.Fatalf("envelope code %d, want 422 in every form: %s", rp.env.Code, rp.raw)
				}
				switch rp.status {
				case 422:
					sawHTTP = true
				case 200:
					sawBody = true
				default:
					t.Fatalf("HTTP %d", rp.status)
				}
			}
			if sawHTTP != tt.wantHTTP || sawBody != tt.wantBody {
				t.Fatalf("saw HTTP form %t, body form %t; want %t, %t", sawHTTP, sawBody, tt.wantHTTP, tt.wantBody)
			}
		})
	}
}

func TestAccountSwitches(t *testing.T) {
	f := setup(t, Options{})
	upload := func() reply {
		return f.postJSON(f.srv.UploadURL+pathBase64Upload, map[string]string{"base64Data": "aGVsbG8=", "uploadPath": "x"})
	}
	credit := func() reply { return f.get(f.srv.APIURL + pathCredit) }

	f.srv.SetMaintenance(true)
	for name, rp := range map[string]reply{"generate": f.generate(prompt("a")), "credit": credit(), "record": f.record("x"), "upload": upload()} {
		if rp.env.Code != 455 {
			t.Errorf("maintenance: %s code %d, want 455", name, rp.env.Code)
		}
	}
	f.srv.SetMaintenance(false)

	f.srv.SetFeatureDisabled(true)
	if rp := f.generate(prompt("a")); rp.env.Code != 505 {
		t.Errorf("feature disabled: generate code %d, want 505", rp.env.Code)
	}
	if rp := credit(); rp.env.Code != 200 {
		t.Errorf("feature disabled: credit code %d, want 200", rp.env.Code)
	}
	f.srv.SetFeatureDisabled(false)

	f.srv.SetStorm(true)
	for range 3 {
		if rp := f.generate(prompt("a")); rp.env.Code != 429 {
			t.Errorf("storm: code %d, want 429", rp.env.Code)
		}
	}
	f.srv.SetStorm(false)
	st := f.srv.Stats()
	if st.Accepted != 0 || st.RateLimited != 3 || st.CreditsSpent != 0 {
		t.Errorf("after storm: accepted %d, rate limited %d, spent %v; want 0, 3, 0", st.Accepted, st.RateLimited, st.CreditsSpent)
	}
	if rp := f.generate(prompt("a")); rp.env.Code != 200 {
		t.Errorf("after switches off: code %d", rp.env.Code)
	}
}

func TestCredits(t *testing.T) {
	f := setup(t, Options{Credits: 2.5, Prices: map[string]float64{modelMax: 1.5, modelPro: 0.75}})
	if got := f.srv.Credits(); got != 2.5 {
		t.Fatalf("starting credits %v", got)
	}
	f.submit(map[string]any{"prompt": "a", "model": modelMax}) // 1.0 left
	if rp := f.generate(map[string]any{"prompt": "a", "model": modelMax}); rp.env.Code != 402 {
		t.Fatalf("max with 1.0 left: code %d, want 402", rp.env.Code)
	}
	f.submit(prompt("a")) // pro by default: 0.25 left
	rp := f.get(f.srv.APIURL + pathCredit)
	if rp.env.Code != 200 || string(rp.env.Data) != "0.25" {
		t.Fatalf("credit answer %s, want data 0.25", rp.raw)
	}
	if rp := f.generate(prompt("a")); rp.env.Code != 402 {
		t.Fatalf("pro with 0.25 left: code %d, want 402", rp.env.Code)
	}
	f.srv.SetCredits(10)
	f.submit(prompt("a"))
	if st := f.srv.Stats(); st.Accepted != 3 || st.CreditsSpent != 3 {
		t.Fatalf("accepted %d, spent %v; want 3, 3", st.Accepted, st.CreditsSpent)
	}

	// An unlimited balance still goes down by every bill, per model.
	unlimited := setup(t, Options{Prices: map[string]float64{modelMax: 10, modelPro: 5}})
	balance := func() float64 {
		t.Helper()
		rp := unlimited.get(unlimited.srv.APIURL + pathCredit)
		v, err := strconv.ParseFloat(string(rp.env.Data), 64)
		if rp.env.Code != 200 || err != nil {
			t.Fatalf("unlimited credit answer %s", rp.raw)
		}
		return v
	}
	before := balance()
	unlimited.submit(prompt("a"))
	afterPro := balance()
	unlimited.submit(map[string]any{"prompt": "a", "model": modelMax})
	if afterMax := balance(); before < 1e8 || before-afterPro != 5 || afterPro-afterMax != 10 {
		t.Fatalf("unlimited balance %v, then %v after pro, %v after max; want it to drop by 5, then 10", before, afterPro, afterMax)
	}
}

func TestContentPolicyAndTransientErrors(t *testing.T) {
	f := setup(t, Options{ContentPolicyWords: []string{"Forbidden"}})
	if rp := f.generate(prompt("a FORBIDDEN thing")); rp.env.Code != 400 {
		t.Fatalf("flagged prompt: code %d, want 400", rp.env.Code)
	}
	if st := f.srv.Stats(); st.Accepted != 0 || st.CreditsSpent != 0 {
		t.Fatal("a refused prompt was billed")
	}

	g := setup(t, Options{TransientErrorRate: 1})
	for name, rp := range map[string]reply{"generate": g.generate(prompt("a")), "credit": g.get(g.srv.APIURL + pathCredit)} {
		if rp.env.Code != 500 {
			t.Errorf("%s: code %d, want 500", name, rp.env.Code)
		}
	}
	if st := g.srv.Stats(); st.Accepted != 0 || st.CreditsSpent != 0 {
		t.Fatal("a transient 500 created or billed a task")
	}

	h := setup(t, Options{TransientErrorRate: 0.3, Seed: 7})
	fails := 0
	for range 200 {
		if h.get(h.srv.APIURL+pathCredit).env.Code == 500 {
			fails++
		}
	}
	if fails < 30 || fails > 90 {
		t.Fatalf("%d of 200 calls failed at rate 0.3", fails)
	}
}

func TestDuplicateSubmissionsAndDeterminism(t *testing.T) {
	run := func() ([]string, Stats) {
		f := setup(t, Options{Seed: 99, GenerationFailureRate: 0.5})
		ids := []string{
			f.submit([]byte(`{"prompt":"a","model":"flux-kontext-max"}`)),
			f.submit([]byte(`{ "model": "flux-kontext-max", "prompt": "a", "callBackUrl": "http://127.0.0.1:1/x" }`)),
			f.submit([]byte(`{"prompt":"a"}`)),
			f.submit([]byte(`{"prompt":"b"}`)),
		}
		for _, ti := range f.srv.Tasks() {
			ids = append(ids, fmt.Sprint(ti.Outcome, ti.CompleteTime.Sub(ti.CreateTime)))
		}
		return ids, f.srv.Stats()
	}
	a, st := run()
	b, _ := run()
	if st.DuplicateSubmissions != 1 {
		t.Fatalf("DuplicateSubmissions = %d, want 1 (same request, other key order and callback)", st.DuplicateSubmissions)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same seed, different runs:\n%v\n%v", a, b)
	}
	if a[0] == a[1] {
		t.Fatal("two tasks share an id")
	}
}

func TestSecretsStayOutOfFormatting(t *testing.T) {
	o := Options{Key: "sekrit-key", CallbackHMACKey: []byte("hmac-sekrit")}
	f := setup(t, o)
	for _, v := range []any{o, &o, f.srv, f.srv.Sim} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "sekrit") {
				t.Errorf("%s of %T leaks a secret: %s", verb, v, out)
			}
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	f := setup(t, Options{GenerateLimit: 30, RecordInfoLimit: -1, TruncateRate: 0.2, Quirks: true})
	var wg sync.WaitGroup
	codes := make(chan int, 400)
	for range 8 {
		wg.Go(func() {
			for range 10 {
				rp := f.generate(prompt("a"))
				codes <- rp.env.Code
				var d struct {
					TaskID string `json:"taskId"`
				}
				if json.Unmarshal(rp.env.Data, &d) == nil && d.TaskID != "" {
					f.record(d.TaskID)
				}
			}
		})
	}
	wg.Wait()
	close(codes)
	ok, limited := 0, 0
	for c := range codes {
		switch c {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("unexpected code %d", c)
		}
	}
	if st := f.srv.Stats(); ok != 30 || limited != 50 || st.Accepted != 30 || st.MaxInWindow != 30 {
		t.Fatalf("80 concurrent calls against 30/10s: %d accepted, %d limited, stats %+v", ok, limited, st)
	}
}

func TestLiveDuplicates(t *testing.T) {
	f := setup(t, Options{GenerationFailureRate: 1})
	f.finish(f.submit(prompt("a")))
	f.srv.Update(func(o *Options) { o.GenerationFailureRate = 0 })
	f.submit(prompt("a")) // a resubmission after the failure: a new paid task, rightly
	if st := f.srv.Stats(); st.DuplicateSubmissions != 1 || st.LiveDuplicates != 0 {
		t.Fatalf("after a failure: duplicates %d, live %d; want 1, 0", st.DuplicateSubmissions, st.LiveDuplicates)
	}
	f.submit(prompt("a")) // the twin is still generating: paid twice
	if st := f.srv.Stats(); st.DuplicateSubmissions != 2 || st.LiveDuplicates != 1 {
		t.Fatalf("while generating: duplicates %d, live %d; want 2, 1", st.DuplicateSubmissions, st.LiveDuplicates)
	}
}
