package kie_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
)

var (
	t0    = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	t0ms  = "1748772000000" // t0 in epoch milliseconds
	t0rfc = "2025-06-01T10:00:00Z"
)

func TestDecodeRecord(t *testing.T) {
	tests := []struct {
		name string
		data string
		want kie.Record
	}{
		{
			name: "documented success",
			data: `{"taskId":"t1","paramJson":"{\"prompt\":\"fox\"}","createTime":"2025-06-01T10:00:00Z","completeTime":"2025-06-01T10:00:12Z",
				"response":{"resultImageUrl":"https://f.example/r.jpg","originImageUrl":"https://f.example/o.jpg"},"successFlag":1,"errorCode":null,"errorMessage":null}`,
			want: kie.Record{TaskID: "t1", ParamJSON: `{"prompt":"fox"}`, CreateTime: t0, CompleteTime: t0.Add(12 * time.Second),
				ResultImageURL: "https://f.example/r.jpg", OriginImageURL: "https://f.example/o.jpg", SuccessFlag: kie.Succeeded},
		},
		{
			name: "RFC 3339 with offset becomes UTC",
			data: `{"createTime":"2025-06-01T12:00:00+02:00"}`,
			want: kie.Record{CreateTime: t0},
		},
		{
			name: "zoneless time is UTC",
			data: `{"createTime":"2025-06-01 10:00:00","completeTime":"2025-06-01 10:00:12.5"}`,
			want: kie.Record{CreateTime: t0, CompleteTime: t0.Add(12500 * time.Millisecond)},
		},
		{
			name: "epoch milliseconds as number and as string",
			data: `{"createTime":` + t0ms + `,"completeTime":"` + t0ms + `"}`,
			want: kie.Record{CreateTime: t0, CompleteTime: t0},
		},
		{
			name: "absent times",
			data: `{"createTime":null,"completeTime":""}`,
			want: kie.Record{},
		},
		{
			name: "time as the string null and as 0",
			data: `{"createTime":"null","completeTime":0}`,
			want: kie.Record{},
		},
		{
			name: "errorCode as number",
			data: `{"successFlag":3,"errorCode":501,"errorMessage":"generation failed"}`,
			want: kie.Record{SuccessFlag: kie.GenerationFailed, ErrorCode: 501, ErrorMessage: "generation failed"},
		},
		{
			name: "errorCode and successFlag as strings",
			data: `{"successFlag":"2","errorCode":"500"}`,
			want: kie.Record{SuccessFlag: kie.CreateFailed, ErrorCode: 500},
		},
		{
			name: "errorCode as the string null",
			data: `{"successFlag":0,"errorCode":"null"}`,
			want: kie.Record{},
		},
		{
			name: "errorCode empty",
			data: `{"errorCode":""}`,
			want: kie.Record{},
		},
		{
			name: "absent URLs as empty strings and null strings",
			data: `{"response":{"resultImageUrl":"","originImageUrl":"null"}}`,
			want: kie.Record{},
		},
		{
			name: "absent URLs as JSON null, response null",
			data: `{"response":null}`,
			want: kie.Record{},
		},
		{
			name: "response double-encoded",
			data: `{"response":"{\"resultImageUrl\":\"https://f.example/r.png\"}"}`,
			want: kie.Record{ResultImageURL: "https://f.example/r.png"},
		},
		{
			name: "paramJson as an object keeps its JSON text",
			data: `{"paramJson":{"prompt": "fox", "aspectRatio": "1:1"}}`,
			want: kie.Record{ParamJSON: `{"prompt":"fox","aspectRatio":"1:1"}`},
		},
		{
			name: "unknown fields ignored",
			data: `{"taskId":"t2","fallbackFlag":false,"extra":{"a":[1,2]},"successFlag":1,"response":{"resultImageUrl":"u","resultUrls":["x"]}}`,
			want: kie.Record{TaskID: "t2", SuccessFlag: kie.Succeeded, ResultImageURL: "u"},
		},
		{
			name: "numeric taskId",
			data: `{"taskId":12345}`,
			want: kie.Record{TaskID: "12345"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kie.DecodeRecord([]byte(tt.data))
			if err != nil {
				t.Fatalf("DecodeRecord: %v", err)
			}
			if !recordsEqual(*got, tt.want) {
				t.Errorf("DecodeRecord =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	tests := []struct{ name, data, field string }{
		{"null data", `null`, "no record"},
		{"not an object", `"t1"`, "object"},
		{"unknown time format", `{"createTime":"June 1st"}`, "createTime"},
		{"time out of range", `{"completeTime":99999999999999999}`, "completeTime"},
		{"errorCode not a number", `{"errorCode":"E501"}`, "errorCode"},
		{"errorCode fractional", `{"errorCode":500.5}`, "errorCode"},
		{"successFlag as object", `{"successFlag":{}}`, "successFlag"},
		{"URL as number list", `{"response":{"resultImageUrl":[1]}}`, "resultImageUrl"},
		{"broken JSON", `{"taskId":`, "record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := kie.DecodeRecord([]byte(tt.data))
			if err == nil {
				t.Fatalf("DecodeRecord accepted %s: %+v", tt.data, r)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func recordsEqual(a, b kie.Record) bool {
	ta, tb := a.CreateTime, b.CreateTime
	ca, cb := a.CompleteTime, b.CompleteTime
	a.CreateTime, b.CreateTime, a.CompleteTime, b.CompleteTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b && ta.Equal(tb) && ca.Equal(cb) && ta.Location() == time.UTC && ca.Location() == time.UTC
}

// encodeRecord renders r in Kie's documented wire form.
func encodeRecord(r *kie.Record) []byte {
	timeText := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(map[string]any{
		"taskId":       r.TaskID,
		"paramJson":    r.ParamJSON,
		"createTime":   timeText(r.CreateTime),
		"completeTime": timeText(r.CompleteTime),
		"response":     map[string]string{"resultImageUrl": r.ResultImageURL, "originImageUrl": r.OriginImageURL},
		"successFlag":  int(r.SuccessFlag),
		"errorCode":    r.ErrorCode,
		"errorMessage": r.ErrorMessage,
	})
	return b
}

func FuzzDecodeRecord(f *testing.F) {
	seeds := []string{
		`{"taskId":"t1","paramJson":"{\"prompt\":\"fox\"}","createTime":"` + t0rfc + `","completeTime":"2025-06-01T10:00:12.345+02:00","response":{"resultImageUrl":"https://f/r.jpg","originImageUrl":"https://f/o.jpg"},"successFlag":1,"errorCode":null,"errorMessage":null}`,
		`{"createTime":"2025-06-01 10:00:00","completeTime":"2025-06-01 10:00:12"}`,
		`{"createTime":` + t0ms + `,"completeTime":"` + t0ms + `"}`,
		`{"createTime":"null","completeTime":""}`,
		`{"createTime":null,"completeTime":0}`,
		`{"successFlag":"3","errorCode":"501","errorMessage":"failed"}`,
		`{"successFlag":2,"errorCode":500}`,
		`{"errorCode":"null"}`,
		`{"errorCode":""}`,
		`{"errorCode":null}`,
		`{"response":{"resultImageUrl":"","originImageUrl":"null"}}`,
		`{"response":null}`,
		`{"response":"{\"resultImageUrl\":\"u\"}"}`,
		`{"paramJson":{"prompt":"fox"}}`,
		`{"paramJson":"null"}`,
		`{"taskId":123,"unknown":[1,{"x":null}],"successFlag":0}`,
		`{"createTime":"0001-01-01T00:00:00Z"}`,
		`{"createTime":"9999-12-31T23:59:59.999999999-23:59"}`,
		`{"createTime":-62135596800000}`,
		`{"createTime":1.7487720e12}`,
		`null`, `{}`, `[]`, `"x"`, ``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := kie.DecodeRecord(data)
		if err != nil {
			return
		}
		for _, tm := range []time.Time{r.CreateTime, r.CompleteTime} {
			if tm.IsZero() {
				continue
			}
			if tm.Location() != time.UTC {
				t.Fatalf("time %v is not UTC", tm)
			}
			if _, err := tm.MarshalJSON(); err != nil {
				t.Fatalf("decoded time %v cannot be re-encoded: %v", tm, err)
			}
		}
		// Re-encoding the record in the documented form and decoding it again changes nothing.
		again, err := kie.DecodeRecord(encodeRecord(r))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%s", err, encodeRecord(r))
		}
		if !recordsEqual(*again, *r) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", *r, *again)
		}
	})
}
