package kie

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DecodeRecord decodes the data object of a record-info answer, tolerating the drift observed
// between Kie's documentation and its answers:
//   - times (createTime, completeTime) as RFC 3339, as "2006-01-02 15:04:05" (no zone: UTC), or as
//     epoch milliseconds (a number or a numeric string); null, "", "null" and 0 mean absent;
//   - errorCode and successFlag as a number or a numeric string; null, "" and "null" mean 0;
//   - URLs as "", "null" or null when absent (all become "");
//   - paramJson as a JSON string or, tolerated, an object (its compact JSON text is kept);
//   - response itself as an object or a JSON string holding one;
//   - unknown fields are ignored.
//
// Times are returned in UTC. Anything else (a time in no known format, a code that is not a
// number) is an error naming the field: guessing would hide drift that needs a look.
func DecodeRecord(data []byte) (*Record, error) {
	var w struct {
		TaskID       json.RawMessage `json:"taskId"`
		ParamJSON    json.RawMessage `json:"paramJson"`
		CreateTime   json.RawMessage `json:"createTime"`
		CompleteTime json.RawMessage `json:"completeTime"`
		Response     json.RawMessage `json:"response"`
		SuccessFlag  json.RawMessage `json:"successFlag"`
		ErrorCode    json.RawMessage `json:"errorCode"`
		ErrorMessage json.RawMessage `json:"errorMessage"`
	}
	if err := decodeObject(data, &w); err != nil {
		if errors.Is(err, errAbsent) {
			return nil, errors.New("kie: decode record: no record (data is null or empty)")
		}
		return nil, fmt.Errorf("kie: decode record: %w", err)
	}
	var r Record
	var err error
	field := func(name string, e error) error {
		return fmt.Errorf("kie: decode record: %s: %w", name, e)
	}
	if r.TaskID, err = looseString(w.TaskID); err != nil {
		return nil, field("taskId", err)
	}
	if r.ParamJSON, err = looseJSONText(w.ParamJSON); err != nil {
		return nil, field("paramJson", err)
	}
	if r.CreateTime, err = looseTime(w.CreateTime); err != nil {
		return nil, field("createTime", err)
	}
	if r.CompleteTime, err = looseTime(w.CompleteTime); err != nil {
		return nil, field("completeTime", err)
	}
	flag, _, err := looseInt(w.SuccessFlag)
	if err != nil || flag < math.MinInt32 || flag > math.MaxInt32 {
		return nil, field("successFlag", errOr(err, "out of range"))
	}
	r.SuccessFlag = SuccessFlag(flag)
	code, _, err := looseInt(w.ErrorCode)
	if err != nil || code < math.MinInt32 || code > math.MaxInt32 {
		return nil, field("errorCode", errOr(err, "out of range"))
	}
	r.ErrorCode = int(code)
	if r.ErrorMessage, err = looseString(w.ErrorMessage); err != nil {
		return nil, field("errorMessage", err)
	}

	resp := w.Response
	if s, ok := jsonString(resp); ok {
		// A response double-encoded as a string, like paramJson.
		resp = json.RawMessage(s)
		if t := strings.TrimSpace(s); t == "" || strings.EqualFold(t, "null") {
			resp = nil
		}
	}
	var rw struct {
		ResultImageURL json.RawMessage `json:"resultImageUrl"`
		OriginImageURL json.RawMessage `json:"originImageUrl"`
	}
	if err := decodeObject(resp, &rw); err != nil && !errors.Is(err, errAbsent) {
		return nil, field("response", err)
	}
	if r.ResultImageURL, err = looseURL(rw.ResultImageURL); err != nil {
		return nil, field("response.resultImageUrl", err)
	}
	if r.OriginImageURL, err = looseURL(rw.OriginImageURL); err != nil {
		return nil, field("response.originImageUrl", err)
	}
	return &r, nil
}

var errAbsent = errors.New("absent")

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// decodeObject decodes a JSON object into v; absent or null is errAbsent.
func decodeObject(raw []byte, v any) error {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return errAbsent
	}
	if t[0] != '{' {
		return fmt.Errorf("want a JSON object, got %s", quoteSnippet(t))
	}
	return json.Unmarshal(t, v)
}

// jsonString returns the value of raw when it is a JSON string.
func jsonString(raw []byte) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(t, &s) != nil {
		return "", false
	}
	return s, true
}

func quoteSnippet(b []byte) string { return strconv.Quote(truncate(string(b), 40)) }

// looseString accepts a string, a number (kept as its text) or null ("").
func looseString(raw []byte) (string, error) {
	t := bytes.TrimSpace(raw)
	switch {
	case len(t) == 0 || string(t) == "null":
		return "", nil
	case t[0] == '"':
		var s string
		err := json.Unmarshal(t, &s)
		return s, err
	case t[0] == '-' || (t[0] >= '0' && t[0] <= '9'):
		var n json.Number
		err := json.Unmarshal(t, &n)
		return n.String(), err
	}
	return "", fmt.Errorf("want a string, got %s", quoteSnippet(t))
}

// looseURL is looseString with "null" meaning absent.
func looseURL(raw []byte) (string, error) {
	s, err := looseString(raw)
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "null") {
		s = ""
	}
	return s, err
}

// looseJSONText accepts JSON text carried as a string, or an object or array kept as compact text.
func looseJSONText(raw []byte) (string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		var b bytes.Buffer
		if err := json.Compact(&b, t); err != nil {
			return "", err
		}
		// As for a JSON string: invalid UTF-8 becomes U+FFFD, so both forms read the same.
		return strings.ToValidUTF8(b.String(), "\uFFFD"), nil
	}
	return looseString(raw)
}

// looseNumber returns the text of a JSON number or numeric string; absent for null, "", "null".
func looseNumber(raw []byte) (text string, present bool, err error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return "", false, nil
	}
	switch {
	case t[0] == '"':
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return "", false, err
		}
		s = strings.TrimSpace(s)
		if s == "" || strings.EqualFold(s, "null") {
			return "", false, nil
		}
		return s, true, nil
	case t[0] == '-' || (t[0] >= '0' && t[0] <= '9'):
		return string(t), true, nil
	}
	return "", false, fmt.Errorf("want a number, got %s", quoteSnippet(t))
}

// looseInt accepts an integer as a number (integral floats included) or numeric string.
func looseInt(raw []byte) (v int64, present bool, err error) {
	s, present, err := looseNumber(raw)
	if err != nil || !present {
		return 0, present, err
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, true, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false, fmt.Errorf("want an integer, got %s", strconv.Quote(truncate(s, 40)))
	}
	return int64(f), true, nil
}

// looseFloat accepts a finite number or numeric string.
func looseFloat(raw []byte) (v float64, present bool, err error) {
	s, present, err := looseNumber(raw)
	if err != nil || !present {
		return 0, present, err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, fmt.Errorf("want a finite number, got %s", strconv.Quote(truncate(s, 40)))
	}
	return f, true, nil
}

var zonelessLayouts = []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05"}

// looseTime accepts RFC 3339, a zoneless "2006-01-02 15:04:05" (UTC), or epoch milliseconds as
// a number or numeric string. null, "", "null" and 0 are the zero time.
func looseTime(raw []byte) (time.Time, error) {
	var t time.Time
	if s, ok := jsonString(raw); ok && !isEpoch(strings.TrimSpace(s)) {
		s = strings.TrimSpace(s)
		if s == "" || strings.EqualFold(s, "null") {
			return time.Time{}, nil
		}
		var err error
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			t, err = parseZoneless(s)
			if err != nil {
				return time.Time{}, fmt.Errorf("unrecognised time %s", strconv.Quote(truncate(s, 40)))
			}
		}
	} else {
		ms, present, err := looseInt(raw)
		if err != nil {
			return time.Time{}, err
		}
		if !present || ms == 0 {
			return time.Time{}, nil
		}
		t = time.UnixMilli(ms)
	}
	t = t.UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("time %s is out of range", t.Format(time.RFC3339))
	}
	return t, nil
}

func parseZoneless(s string) (time.Time, error) {
	var err error
	for _, layout := range zonelessLayouts {
		var t time.Time
		if t, err = time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// isEpoch reports a string of digits, optionally signed: epoch milliseconds in a string.
func isEpoch(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return isDigits(s)
}

// decodeUploadedFile decodes the data of an upload answer.
func decodeUploadedFile(data []byte) (*UploadedFile, error) {
	var w struct {
		FileName    json.RawMessage `json:"fileName"`
		FilePath    json.RawMessage `json:"filePath"`
		DownloadURL json.RawMessage `json:"downloadUrl"`
		FileSize    json.RawMessage `json:"fileSize"`
		MimeType    json.RawMessage `json:"mimeType"`
		UploadedAt  json.RawMessage `json:"uploadedAt"`
	}
	if err := decodeObject(data, &w); err != nil {
		return nil, err
	}
	var f UploadedFile
	var err error
	if f.DownloadURL, err = looseURL(w.DownloadURL); err != nil {
		return nil, fmt.Errorf("downloadUrl: %w", err)
	}
	if f.DownloadURL == "" {
		return nil, errors.New("downloadUrl is empty")
	}
	if f.FileName, err = looseString(w.FileName); err != nil {
		return nil, fmt.Errorf("fileName: %w", err)
	}
	if f.FilePath, err = looseString(w.FilePath); err != nil {
		return nil, fmt.Errorf("filePath: %w", err)
	}
	if f.MimeType, err = looseString(w.MimeType); err != nil {
		return nil, fmt.Errorf("mimeType: %w", err)
	}
	if f.FileSize, _, err = looseInt(w.FileSize); err != nil {
		return nil, fmt.Errorf("fileSize: %w", err)
	}
	if f.UploadedAt, err = looseTime(w.UploadedAt); err != nil {
		return nil, fmt.Errorf("uploadedAt: %w", err)
	}
	return &f, nil
}
