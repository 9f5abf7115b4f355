package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

func (r *Reader) nextJSONL() (Item, error) {
	for {
		line, long, err := r.line()
		if err != nil {
			return Item{}, err
		}
		n := r.lr.n
		if long > 0 {
			return Item{}, r.lineErr(n, line, nil, tooLong(long, r.lr.max))
		}
		if isBlank(line) {
			continue
		}
		s, ps := parseJSONLine(line)
		return r.finish(n, line, s, ps)
	}
}

// parseJSONLine reads one JSON object, walking it key by key rather than unmarshalling it
// into a struct: that is what lets every problem name its field (unknown names, duplicates,
// wrong types, invalid UTF-8, which encoding/json would otherwise replace silently).
func parseJSONLine(line []byte) (Spec, []Problem) {
	var s Spec
	var ps []Problem
	syntax := func(err error) (Spec, []Problem) {
		return Spec{}, append(ps, Problem{Message: "invalid JSON: " + jsonErr(err)})
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if err != nil {
		return syntax(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		msg := "want a JSON object such as {\"prompt\": \"...\"}, found " + jsonKind(bytes.TrimSpace(line))
		if ok && d == '[' {
			msg += " (JSONL is one object per line, not a JSON array)"
		}
		return Spec{}, []Problem{{Message: msg}}
	}
	var seen [16]bool
	badUTF8 := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntax(err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntax(err)
		}
		i := fieldIndex(key)
		if i < 0 {
			ps = append(ps, unknownField(key, "field"))
			continue
		}
		if seen[i] {
			ps = append(ps, Problem{key, "appears twice"})
			continue
		}
		seen[i] = true
		if !utf8.Valid(raw) {
			badUTF8 = true
			ps = append(ps, Problem{key, "is not valid UTF-8"})
			continue
		}
		if p := setJSONField(&s, key, lineFields[i].kind, raw); p != nil {
			ps = append(ps, *p)
		}
	}
	if _, err := dec.Token(); err != nil {
		return syntax(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		ps = append(ps, Problem{Message: "unexpected text after the JSON object"})
	}
	if !badUTF8 && !utf8.Valid(line) {
		ps = append(ps, Problem{Message: "the line is not valid UTF-8"})
	}
	return s, ps
}

// setJSONField decodes one value; JSON null means "not set", like leaving the field out.
func setJSONField(s *Spec, name string, kind fieldKind, raw json.RawMessage) *Problem {
	got := jsonKind(raw)
	if got == "null" {
		return nil
	}
	switch kind {
	case kindString:
		if got != "a string" {
			return &Problem{name, "must be a string, not " + got}
		}
		*stringField(s, name) = jsonString(raw)
	case kindBool:
		if got != "a boolean" {
			msg := "must be true or false, not " + got
			if u, err := strconv.Unquote(string(raw)); err == nil && (u == "true" || u == "false") {
				msg += " (write it without quotes)"
			}
			return &Problem{name, msg}
		}
		v := bytes.Equal(raw, []byte("true"))
		*boolField(s, name) = &v
	case kindInt:
		if got != "a number" {
			return &Problem{name, "must be a whole number, not " + got}
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil {
			return &Problem{name, fmt.Sprintf("must be a whole number, not %s", quoteRaw(raw))}
		}
		s.SafetyTolerance = &v
	}
	return nil
}

func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return "text that is not JSON"
}

// jsonErr words a decoding error for a user: where on the line, and what.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the line ends inside the object"
	}
	return err.Error()
}

// jsonString decodes a JSON string the decoder has already checked. Most prompts hold no
// escapes, and for those a copy is all it takes.
func jsonString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var v string
	_ = json.Unmarshal(raw, &v) // cannot fail: raw is a complete, valid JSON string
	return v
}

// quoteRaw shows a JSON number in a message, cut short.
func quoteRaw(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "..."
	}
	return string(raw)
}
