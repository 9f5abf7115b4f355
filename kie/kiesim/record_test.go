package kiesim

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestGenerateSlidingWindow(t *testing.T) {
	f := setup(t, Options{})
	var accepted []time.Time
	try := func() int {
		code := f.generate(prompt("a")).env.Code
		if code == 200 {
			accepted = append(accepted, f.clock.Now())
		}
		return code
	}
	for i := range 20 {
		if code := try(); code != 200 {
			t.Fatalf("call %d in a fresh window: code %d", i, code)
		}
	}
	if code := try(); code != 429 {
		t.Fatalf("21st call in the window: code %d, want 429", code)
	}
	f.clock.Advance(10*time.Second - time.Millisecond)
	if code := try(); code != 429 {
		t.Fatalf("1ms before the window slides: code %d, want 429", code)
	}
	f.clock.Advance(time.Millisecond)
	if code := try(); code != 200 {
		t.Fatalf("once 10s have passed: code %d, want 200", code)
	}

	// A token bucket of rate 2/s and burst 20 is what KIE-API.md warns about: it sends up to 40
	// in one window. The simulator must refuse the excess and never admit more than 20 in any
	// 10s window.
	tokens, last := 20.0, f.clock.Now()
	for range 600 {
		f.clock.Advance(50 * time.Millisecond)
		now := f.clock.Now()
		tokens = min(20, tokens+2*now.Sub(last).Seconds())
		last = now
		for tokens >= 1 {
			tokens--
			try()
		}
	}
	for i, start := range accepted {
		n := 0
		for _, at := range accepted[i:] {
			if at.Sub(start) < 10*time.Second {
				n++
			}
		}
		if n > 20 {
			t.Fatalf("%d calls accepted in the 10s from %s", n, start)
		}
	}
	st := f.srv.Stats()
	if st.MaxInWindow != 20 || st.RateLimited == 0 || st.Accepted != len(accepted) {
		t.Fatalf("MaxInWindow %d, RateLimited %d, Accepted %d (want 20, >0, %d)", st.MaxInWindow, st.RateLimited, st.Accepted, len(accepted))
	}
	if st.Answers[AnswerKey{EndpointGenerate, 429}] != st.RateLimited {
		t.Fatalf("429 answers %d, RateLimited %d", st.Answers[AnswerKey{EndpointGenerate, 429}], st.RateLimited)
	}
}

func TestRateLimitsConfigurable(t *testing.T) {
	f := setup(t, Options{GenerateLimit: -1, RecordInfoLimit: 3, RecordInfoWindow: 2 * time.Second})
	for range 50 {
		f.submit(prompt("a"))
	}
	if st := f.srv.Stats(); st.MaxInWindow != 50 {
		t.Fatalf("disabled limit: MaxInWindow %d, want 50", st.MaxInWindow)
	}
	codes := []int{}
	for range 4 {
		codes = append(codes, f.record("nope").env.Code)
	}
	if !slices.Equal(codes, []int{404, 404, 404, 429}) {
		t.Fatalf("record-info codes %v, want three 404s then 429", codes)
	}
	f.clock.Advance(2 * time.Second)
	if code := f.record("nope").env.Code; code != 404 {
		t.Fatalf("after the window: code %d", code)
	}
	f.srv.Update(func(o *Options) { o.GenerateLimit = 2 })
	f.clock.Advance(10 * time.Second)
	f.submit(prompt("a"))
	f.submit(prompt("a"))
	if code := f.generate(prompt("a")).env.Code; code != 429 {
		t.Fatalf("limit lowered at run time: code %d, want 429", code)
	}
}

func TestRecordInfoLifecycle(t *testing.T) {
	f := setup(t, Options{})
	body := `{"prompt":"a cat","aspectRatio":"1:1"}`
	id := f.submit([]byte(body))

	d := f.recordData(id)
	if d["taskId"] != id || d["successFlag"] != 0.0 || d["completeTime"] != nil || d["errorCode"] != nil {
		t.Fatalf("generating: %v", d)
	}
	if d["paramJson"] != body {
		t.Fatalf("paramJson %q, want the request as a JSON string %q", d["paramJson"], body)
	}
	if resp := d["response"].(map[string]any); resp["resultImageUrl"] != "" {
		t.Fatalf("generating task has a result: %v", resp)
	}

	ti := f.finish(id)
	d = f.recordData(id)
	if d["successFlag"] != 1.0 {
		t.Fatalf("after completion: %v", d)
	}
	for key, want := range map[string]time.Time{"createTime": ti.CreateTime, "completeTime": ti.CompleteTime} {
		got, err := time.Parse(time.RFC3339, d[key].(string))
		if err != nil || !got.Equal(want.Truncate(time.Second)) {
			t.Errorf("%s = %v, want %s", key, d[key], want)
		}
	}
	resp := d["response"].(map[string]any)
	if resp["resultImageUrl"] != ti.ResultURL || resp["originImageUrl"] != ti.OriginURL || ti.ResultURL == "" {
		t.Fatalf("response %v, task %+v", resp, ti)
	}
	if ti, _ = f.srv.Task(id); ti.Polls != 2 {
		t.Fatalf("Polls = %d, want 2", ti.Polls)
	}

	if rp := f.record("no-such-task"); rp.env.Code != 404 {
		t.Fatalf("unknown task: code %d", rp.env.Code)
	}
	if rp := f.get(f.srv.APIURL + pathRecordInfo); rp.env.Code != 422 {
		t.Fatalf("missing taskId: code %d", rp.env.Code)
	}
}

func TestTaskOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		o        Options
		wantFlag float64
		wantCode float64
		atOnce   bool
	}{
		{"success", Options{}, 1, 0, false},
		{"creation failure", Options{CreateFailureRate: 1}, 2, 500, true},
		{"generation failure", Options{GenerationFailureRate: 1}, 3, 501, false},
		{"flagged output", Options{FlaggedOutputRate: 1}, 3, 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, tt.o)
			id := f.submit(prompt("a"))
			if d := f.recordData(id); (d["successFlag"] == tt.wantFlag) != tt.atOnce {
				t.Fatalf("before the generation time: %v", d)
			}
			f.finish(id)
			d := f.recordData(id)
			code, _ := d["errorCode"].(float64)
			if d["successFlag"] != tt.wantFlag || code != tt.wantCode {
				t.Fatalf("successFlag %v errorCode %v, want %v %v", d["successFlag"], d["errorCode"], tt.wantFlag, tt.wantCode)
			}
			if tt.wantFlag != 1 {
				if resp := d["response"].(map[string]any); resp["resultImageUrl"] != "" || d["errorMessage"] == "" {
					t.Fatalf("failed task: %v", d)
				}
			}
		})
	}
}

func TestFailureRatesAndGenerationTimes(t *testing.T) {
	f := setup(t, Options{GenerateLimit: -1, Seed: 3, GenerationFailureRate: 0.2, GenTimeSigma: 3})
	for range 400 {
		f.submit(prompt("a"))
	}
	failed := 0
	var times []time.Duration
	for _, ti := range f.srv.Tasks() {
		if ti.Outcome == 3 {
			failed++
		}
		d := ti.CompleteTime.Sub(ti.CreateTime)
		if d < 800*time.Millisecond || d > 160*time.Second {
			t.Fatalf("generation time %s outside [median/10, median*20]", d)
		}
		times = append(times, d)
	}
	if failed < 50 || failed > 110 {
		t.Fatalf("%d of 400 failed at rate 0.2", failed)
	}
	slices.Sort(times)
	if med := times[len(times)/2]; med < 5*time.Second || med > 13*time.Second {
		t.Fatalf("median generation time %s, want about 8s", med)
	}
	if times[0] != 800*time.Millisecond || times[len(times)-1] != 160*time.Second {
		t.Fatalf("with sigma 3 both clamps should be hit: %s..%s", times[0], times[len(times)-1])
	}
}

func TestTimeoutAnswersOnce(t *testing.T) {
	f := setup(t, Options{TimeoutRate: 1})
	id := f.submit(prompt("a"))
	if code := f.record(id).env.Code; code != 200 {
		t.Fatalf("while generating: code %d, want 200", code)
	}
	f.finish(id)
	var codes []int
	for range 3 {
		codes = append(codes, f.record(id).env.Code)
	}
	if !slices.Equal(codes, []int{408, 200, 200}) {
		t.Fatalf("codes after completion %v, want 408 once then 200", codes)
	}
}

func TestQuirksRotateThroughVariants(t *testing.T) {
	f := setup(t, Options{Quirks: true, GenerateLimit: -1, RecordInfoLimit: -1, GenerationFailureRate: 1})
	failed := f.submit(prompt("fails"))
	f.finish(failed)
	f.srv.Update(func(o *Options) { o.GenerationFailureRate = 0 })
	generating := f.submit(prompt("still running"))

	seen := map[string]bool{}
	kind := func(v any, present bool) string {
		if !present {
			return "absent"
		}
		switch v := v.(type) {
		case nil:
			return "null"
		case float64:
			return "number"
		case string:
			if v == "null" || v == "" {
				return fmt.Sprintf("%q", v)
			}
			if _, err := time.Parse(time.RFC3339, v); err == nil {
				return "rfc3339"
			}
			if _, err := time.Parse(time.DateTime, v); err == nil {
				return "datetime"
			}
			return "string"
		}
		return fmt.Sprintf("%T", v)
	}
	for range 12 {
		for _, id := range []string{failed, generating} {
			d := f.recordData(id)
			ct, _ := d["createTime"]
			seen["createTime "+kind(ct, true)] = true
			ec, present := d["errorCode"]
			seen[fmt.Sprintf("errorCode flag%v %s", d["successFlag"], kind(ec, present))] = true
			if resp, ok := d["response"].(map[string]any); ok {
				seen["url "+kind(resp["resultImageUrl"], true)] = true
			} else {
				seen["response "+kind(d["response"], true)] = true
			}
			for key := range d {
				if !slices.Contains([]string{"taskId", "paramJson", "createTime", "completeTime", "response", "successFlag", "errorCode", "errorMessage"}, key) {
					seen["extra field"] = true
				}
			}
			// A client must be able to read every variant's times as one instant.
			if ms, isNum := ct.(float64); isNum {
				ti, _ := f.srv.Task(id)
				if int64(ms) != ti.CreateTime.UnixMilli() {
					t.Fatalf("epoch ms %v, want %d", ms, ti.CreateTime.UnixMilli())
				}
			}
		}
	}
	for _, want := range []string{
		"createTime rfc3339", "createTime datetime", "createTime number",
		"errorCode flag3 number", "errorCode flag3 string",
		"errorCode flag0 null", `errorCode flag0 "null"`,
		`url ""`, `url "null"`, "response null", "extra field",
	} {
		if !seen[want] {
			t.Errorf("variant %q never produced; saw %v", want, seen)
		}
	}

	plain := setup(t, Options{})
	id := plain.submit(prompt("a"))
	for range 6 {
		d := plain.recordData(id)
		if _, err := time.Parse(time.RFC3339, d["createTime"].(string)); err != nil || d["errorCode"] != nil || len(d) != 8 {
			t.Fatalf("without quirks the answer must keep the documented form: %v", d)
		}
	}
}
