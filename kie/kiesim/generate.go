package kiesim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kontextq/kontextq/kie"
)

// genRequest is the generate body as the simulator reads it: pointers tell "not sent" from a
// zero value. It is decoded field by field with Kie's exact (case-sensitive) names, so a client
// sending "callbackUrl" instead of "callBackUrl" loses its callback here as it would at Kie.
type genRequest struct {
	Prompt            *string `json:"prompt,omitempty"`
	EnableTranslation *bool   `json:"enableTranslation,omitempty"`
	UploadCn          *bool   `json:"uploadCn,omitempty"`
	InputImage        *string `json:"inputImage,omitempty"`
	AspectRatio       *string `json:"aspectRatio,omitempty"`
	OutputFormat      *string `json:"outputFormat,omitempty"`
	PromptUpsampling  *bool   `json:"promptUpsampling,omitempty"`
	Model             *string `json:"model,omitempty"`
	CallBackURL       *string `json:"callBackUrl,omitempty"`
	SafetyTolerance   *int    `json:"safetyTolerance,omitempty"`
	Watermark         *string `json:"watermark,omitempty"`
}

var aspectRatios = map[string][2]int{
	"21:9": {21, 9}, "16:9": {16, 9}, "4:3": {4, 3}, "1:1": {1, 1}, "3:4": {3, 4}, "9:16": {9, 16},
}

const (
	modelPro = "flux-kontext-pro"
	modelMax = "flux-kontext-max"
)

func decodeGenerate(body []byte) (genRequest, error) {
	var g genRequest
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return g, fmt.Errorf("request body is not a JSON object: %w", err)
	}
	targets := map[string]any{
		"prompt": &g.Prompt, "enableTranslation": &g.EnableTranslation, "uploadCn": &g.UploadCn,
		"inputImage": &g.InputImage, "aspectRatio": &g.AspectRatio, "outputFormat": &g.OutputFormat,
		"promptUpsampling": &g.PromptUpsampling, "model": &g.Model, "callBackUrl": &g.CallBackURL,
		"safetyTolerance": &g.SafetyTolerance, "watermark": &g.Watermark,
	}
	for name, raw := range fields {
		target, known := targets[name]
		if !known {
			continue // Kie ignores unknown fields
		}
		if err := json.Unmarshal(raw, target); err != nil {
			return g, fmt.Errorf("%s has the wrong type: %w", name, err)
		}
	}
	// An empty string is read as "not sent", as Kie applies its defaults to it.
	for _, p := range []**string{&g.InputImage, &g.AspectRatio, &g.OutputFormat, &g.Model, &g.CallBackURL, &g.Watermark} {
		if *p != nil && **p == "" {
			*p = nil
		}
	}
	return g, nil
}

func (g *genRequest) isEdit() bool { return g.InputImage != nil }

func (g *genRequest) model() string {
	if g.Model == nil {
		return modelPro
	}
	return *g.Model
}

func (g *genRequest) format() string {
	if g.OutputFormat == nil {
		return "jpeg"
	}
	return *g.OutputFormat
}

// validate checks a decoded request as Kie does and returns the code of the first problem, or
// 0. Out-of-range safetyTolerance is Kie's odd one out: it answers 500, not 422.
func validate(g *genRequest) (int, string) {
	if g.Prompt == nil || strings.TrimSpace(*g.Prompt) == "" {
		return 422, "prompt is required"
	}
	if g.AspectRatio != nil {
		if _, ok := aspectRatios[*g.AspectRatio]; !ok {
			return 422, "aspectRatio must be one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16"
		}
	}
	if f := g.format(); f != "jpeg" && f != "png" {
		return 422, "outputFormat must be jpeg or png"
	}
	if m := g.model(); m != modelPro && m != modelMax {
		return 422, "model must be flux-kontext-pro or flux-kontext-max"
	}
	if g.InputImage != nil && !isHTTPURL(*g.InputImage) {
		return 422, "inputImage must be an http(s) URL"
	}
	if g.CallBackURL != nil && !isHTTPURL(*g.CallBackURL) {
		return 422, "callBackUrl must be an http(s) URL"
	}
	if g.SafetyTolerance != nil {
		limit := 6
		if g.isEdit() {
			limit = 2
		}
		if *g.SafetyTolerance < 0 || *g.SafetyTolerance > limit {
			return 500, "The security tolerance level is out of range and should be 0-2 or 0-6"
		}
	}
	return 0, ""
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// isJSON reports whether a POST declares a JSON body; without it Kie's server does not read
// the fields, so the call fails validation.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// generate is POST /api/v1/flux/kontext/generate. Checks run in the order Kie's layers apply
// them: the feature switch and rate limit before the body is read, then validation, content
// policy and credits. Only accepted calls enter the rate window (Kie does not say whether
// refused ones count): a client that keeps its calls within the limit never sees the
// difference, and one that hammers through 429s shows up in Stats.RateLimited.
func (s *Sim) generate(r *http.Request, body []byte) answer {
	base := s.baseURL(r)
	g, decodeErr := decodeGenerate(body)

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	switch {
	case s.featureDisabled:
		return fail(505, "The feature is currently disabled")
	case s.storm:
		return fail(429, "Too many requests, please slow down")
	}
	inWindow := s.genWin.count(now, s.o.GenerateWindow)
	if s.o.GenerateLimit >= 0 && inWindow >= s.o.GenerateLimit {
		return fail(429, fmt.Sprintf("Rate limit exceeded: at most %d requests per %s", s.o.GenerateLimit, s.o.GenerateWindow))
	}
	if !isJSON(r) {
		return fail(422, "Content-Type must be application/json")
	}
	if decodeErr != nil {
		return fail(422, "Invalid request parameters: "+decodeErr.Error())
	}
	if code, msg := validate(&g); code != 0 {
		return fail(code, msg)
	}
	ratio := aspectRatios["16:9"]
	var in editInput
	if g.isEdit() {
		// An edit keeps its input's ratio when none is asked for; the input is read after the
		// answer (see input.go), so the size is settled then.
		ratio = [2]int{1, 1}
		var own, found bool
		in, own, found = s.inputLocked(*g.InputImage, base, now)
		if own && !found {
			return fail(422, "inputImage could not be fetched")
		}
	}
	if g.AspectRatio != nil {
		ratio = aspectRatios[*g.AspectRatio]
	}
	w, h := ratioDims(ratio, s.o.ImageMaxSide)
	prompt := strings.ToLower(*g.Prompt)
	for _, word := range s.o.ContentPolicyWords {
		if word != "" && strings.Contains(prompt, strings.ToLower(word)) {
			return fail(400, "Your prompt was flagged by the content policy")
		}
	}
	price := s.o.price(g.model())
	if s.credits < price {
		return fail(402, "Insufficient credits")
	}

	t := s.createTaskLocked(g, body, base, now, w, h, price)
	if g.isEdit() {
		t.inputPending, t.inputDone = true, make(chan struct{})
		if s.closed {
			s.settleInputLocked(t, nil, w, h, errClosed)
		} else {
			s.wg.Add(1)
			go s.readInput(t, in)
		}
	}
	s.genWin.add(now)
	s.counters.MaxInWindow = max(s.counters.MaxInWindow, inWindow+1)
	return success(map[string]any{"taskId": t.id})
}

// createTaskLocked bills and records an accepted request, deciding its whole future from the
// seed: every task draws the same sequence, so one knob never shifts another's outcomes.
func (s *Sim) createTaskLocked(g genRequest, body []byte, base string, now time.Time, w, h int, price float64) *task {
	seq := uint64(len(s.order))
	idSum := sha256.Sum256(fmt.Appendf(nil, "kietest-task/%d/%d", s.o.Seed, seq))
	rng := seeded(s.o.Seed, "task", seq)
	genTime := lognormal(s.o.GenTimeMedian, s.o.GenTimeSigma, rng.NormFloat64())
	createFail := rng.Float64() < s.o.CreateFailureRate
	genFail := rng.Float64() < s.o.GenerationFailureRate
	flagged := rng.Float64() < s.o.FlaggedOutputRate
	timeout := rng.Float64() < s.o.TimeoutRate
	drop := rng.Float64() < s.o.CallbackDropRate
	dup := rng.Float64() < s.o.CallbackDuplicateRate

	var compact bytes.Buffer
	if json.Compact(&compact, body) != nil {
		compact.Reset()
		compact.Write(body)
	}
	t := &task{
		id:             hex.EncodeToString(idSum[:16]),
		req:            g,
		paramJSON:      compact.String(),
		base:           base,
		format:         g.format(),
		width:          w,
		height:         h,
		maxSide:        s.o.ImageMaxSide,
		price:          price,
		created:        now,
		completeAt:     now.Add(genTime),
		flag:           1,
		timeoutPending: timeout,
		cbDrop:         drop,
		cbDup:          dup,
	}
	switch {
	case createFail:
		t.flag, t.errCode, t.errMsg = 2, 500, "Task creation failed"
		t.completeAt = now
	case genFail:
		t.flag, t.errCode, t.errMsg = 3, 501, "Image generation failed"
	case flagged:
		t.flag, t.errCode, t.errMsg = 3, 400, "The generated image was flagged by the content policy"
	}
	if g.CallBackURL != nil {
		t.cbURL = *g.CallBackURL
	}
	s.tasks[t.id] = t
	s.order = append(s.order, t)
	s.credits -= price
	s.counters.CreditsSpent += price
	s.counters.Accepted++

	canon := g
	canon.CallBackURL = nil
	cb, _ := json.Marshal(canon)
	key := sha256.Sum256(cb)
	if prev := s.seen[key]; len(prev) > 0 {
		s.counters.DuplicateSubmissions++
		if slices.ContainsFunc(prev, func(p *task) bool { return p.flagAt(now) < 2 }) {
			s.counters.LiveDuplicates++
		}
	}
	s.seen[key] = append(s.seen[key], t)

	if t.cbURL != "" && !t.cbDrop {
		s.scheduleLocked(&delivery{task: t, due: t.completeAt})
	}
	return t
}

// lognormal draws a generation time around median, clamped so a test never waits forever and
// never sees an instant result by accident.
func lognormal(median time.Duration, sigma, z float64) time.Duration {
	if sigma < 0 {
		sigma = 0
	}
	d := time.Duration(float64(median) * math.Exp(sigma*z))
	return min(max(d, median/10), median*20)
}

// kieRequest is the shape a caller knows, for TaskInfo.
func (g *genRequest) kieRequest() kie.GenerateRequest {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return kie.GenerateRequest{
		Prompt:            str(g.Prompt),
		EnableTranslation: g.EnableTranslation,
		UploadCn:          g.UploadCn,
		InputImage:        str(g.InputImage),
		AspectRatio:       str(g.AspectRatio),
		OutputFormat:      str(g.OutputFormat),
		PromptUpsampling:  g.PromptUpsampling,
		Model:             str(g.Model),
		CallBackURL:       str(g.CallBackURL),
		SafetyTolerance:   g.SafetyTolerance,
		Watermark:         str(g.Watermark),
	}
}
