package jobs

import (
	"fmt"
	"strings"
	"testing"
)

func TestReaderJSONL(t *testing.T) {
	t.Parallel()
	const good = `{"prompt":"good"}`
	tests := []struct {
		name string
		line string // placed on line 2, between two good lines
		want wantErr
	}{
		{"unknown field with a near name", `{"prompt":"x","aspect_ratio":"1:1"}`,
			wantErr{2, "aspect_ratio", `prompts.jsonl:2: aspect_ratio: unknown field (did you mean "aspectRatio"?)`}},
		{"field in the wrong case", `{"prompt":"x","Model":"flux-kontext-max"}`, wantErr{2, "Model", `did you mean "model"?`}},
		{"field typo", `{"promt":"x"}`, wantErr{2, "promt", `unknown field (did you mean "prompt"?)`}},
		{"field another name", `{"prompt":"x","image":"https://a.test/b.png"}`, wantErr{2, "image", `did you mean "inputImage"?`}},
		{"unknown field, nothing close", `{"prompt":"x","seed":42}`, wantErr{2, "seed", "seed: unknown field"}},
		{"batch per line", `{"prompt":"x","batch":"b"}`, wantErr{2, "batch", "is set for the whole file, not per line"}},
		{"callback per line", `{"prompt":"x","callBackUrl":"https://a.test"}`, wantErr{2, "callBackUrl", "is set by kontextq"}},
		{"duplicate field", `{"prompt":"x","prompt":"y"}`, wantErr{2, "prompt", "appears twice"}},

		{"string field given a number", `{"prompt":5}`, wantErr{2, "prompt", "must be a string, not a number"}},
		{"string field given an object", `{"prompt":"x","model":{"name":"m"}}`, wantErr{2, "model", "must be a string, not an object"}},
		{"boolean given a quoted boolean", `{"prompt":"x","uploadCn":"true"}`, wantErr{2, "uploadCn", "must be true or false, not a string (write it without quotes)"}},
		{"boolean given a number", `{"prompt":"x","promptUpsampling":1}`, wantErr{2, "promptUpsampling", "must be true or false, not a number"}},
		{"integer given a fraction", `{"prompt":"x","safetyTolerance":2.5}`, wantErr{2, "safetyTolerance", "must be a whole number, not 2.5"}},
		{"integer given a string", `{"prompt":"x","safetyTolerance":"2"}`, wantErr{2, "safetyTolerance", "must be a whole number, not a string"}},
		{"integer too large", `{"prompt":"x","safetyTolerance":99999999999999999999}`, wantErr{2, "safetyTolerance", "must be a whole number"}},

		{"text after the object", `{"prompt":"x"} extra`, wantErr{2, "", "unexpected text after the JSON object"}},
		{"second object on the line", `{"prompt":"x"}{"prompt":"y"}`, wantErr{2, "", "unexpected text after the JSON object"}},
		{"unclosed object", `{"prompt":"x"`, wantErr{2, "", "invalid JSON"}},
		{"unquoted name", `{prompt:"x"}`, wantErr{2, "", "invalid JSON: invalid character 'p'"}},
		{"trailing comma", `{"prompt":"x",}`, wantErr{2, "", "invalid JSON"}},
		{"array", `[{"prompt":"x"}]`, wantErr{2, "", "JSONL is one object per line, not a JSON array"}},
		{"bare text", `a cat on a mat`, wantErr{2, "", "invalid JSON"}},
		{"bare string", `"a cat"`, wantErr{2, "", `want a JSON object such as {"prompt": "..."}, found a string`}},
		{"comment", `# not a comment in JSONL`, wantErr{2, "", "invalid JSON"}},

		{"invalid UTF-8 in a value", "{\"prompt\":\"x\",\"watermark\":\"w\xff\"}", wantErr{2, "watermark", "watermark: is not valid UTF-8"}},
		{"escaped NUL", `{"prompt":"a\u0000b"}`, wantErr{2, "prompt", "contains a NUL byte"}},
		{"missing prompt", `{"model":"flux-kontext-max"}`, wantErr{2, "prompt", "is required"}},
		{"rule of Kie", `{"prompt":"x","aspectRatio":"2:1"}`,
			wantErr{2, "aspectRatio", `prompts.jsonl:2: aspectRatio: "2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16`}},
		{"edit tolerance", `{"prompt":"x","inputImage":"https://a.test/b.png","safetyTolerance":4}`,
			wantErr{2, "safetyTolerance", "4 is out of range 0..2 for edits"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := readAll(t, FormatJSONL, good+"\n"+tt.line+"\n"+good+"\n", ReadOptions{})
			checkLineErrs(t, res.lineErrs, []wantErr{tt.want})
			if len(res.items) != 2 || res.items[0].Line != 1 || res.items[1].Line != 3 {
				t.Errorf("items %+v, want lines 1 and 3: reading goes on after a bad line", res.items)
			}
		})
	}
}

func TestReaderJSONLFields(t *testing.T) {
	t.Parallel()
	line := `{"id":"job-1","prompt":"make it snow","inputImage":"https://a.test/in.png","aspectRatio":"4:3",` +
		`"model":"flux-kontext-max","outputFormat":"png","promptUpsampling":true,"safetyTolerance":1,` +
		`"enableTranslation":false,"watermark":"wm","uploadCn":true}`
	res := readAll(t, FormatJSONL, "\n  \n"+line+"\r\n", ReadOptions{Batch: "b"})
	if len(res.items) != 1 {
		t.Fatalf("items %v, errors %v", res.items, res.lineErrs)
	}
	it := res.items[0]
	want := Spec{ID: "job-1", Batch: "b", Prompt: "make it snow", InputImage: "https://a.test/in.png", AspectRatio: "4:3",
		Model: "flux-kontext-max", OutputFormat: "png", PromptUpsampling: ptr(true), SafetyTolerance: ptr(1),
		EnableTranslation: ptr(false), Watermark: "wm", UploadCn: ptr(true)}
	if it.Line != 3 || fmt.Sprintf("%+v", deref(it.Spec)) != fmt.Sprintf("%+v", deref(want)) {
		t.Errorf("line %d: %+v\nwant line 3: %+v", it.Line, deref(it.Spec), deref(want))
	}

	// null is the same as leaving a field out.
	res = readAll(t, FormatJSONL, `{"prompt":"x","model":null,"safetyTolerance":null,"uploadCn":null}`+"\n", ReadOptions{})
	if len(res.items) != 1 || res.items[0].Spec.Model != "" || res.items[0].Spec.SafetyTolerance != nil || res.items[0].Spec.UploadCn != nil {
		t.Errorf("items %+v, errors %v, want the null fields unset", res.items, res.lineErrs)
	}
}

// deref shows a Spec's pointer fields by value, for comparison and messages.
func deref(s Spec) string {
	show := func(p any) string {
		switch v := p.(type) {
		case *bool:
			if v != nil {
				return fmt.Sprint(*v)
			}
		case *int:
			if v != nil {
				return fmt.Sprint(*v)
			}
		}
		return "unset"
	}
	return strings.Join([]string{s.ID, s.Batch, s.Prompt, s.InputImage, s.AspectRatio, s.Model, s.OutputFormat,
		show(s.PromptUpsampling), show(s.SafetyTolerance), show(s.EnableTranslation), s.Watermark, show(s.UploadCn)}, "|")
}
