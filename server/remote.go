package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"

	"github.com/kontextq/kontextq/jobs"
)

const localRefused = "only http(s) URLs are accepted over the HTTP API: a file path would name a file on the server " +
	"(upload the image somewhere Kie can fetch it, or load the file locally with kontextq load)"

// remoteOnly passes a JSONL stream through, blanking every line whose inputImage is not an
// http(s) URL and recording a problem for it. It stands in front of jobs.Reader because the
// reader's validation opens local files: a remote caller must learn nothing about the server's
// files, not even whether one exists. Blanking keeps line numbers (a blank line is skipped but
// counted).
//
// It reads lines as jobs.Reader does: a line ends at '\n' (a trailing '\r' is dropped), the first
// line may start with a UTF-8 byte order mark, and a line longer than the reader accepts is
// passed through untouched, since the reader refuses it before looking at its fields.
type remoteOnly struct {
	br       *bufio.Reader
	line     int
	pending  []byte
	passing  bool // in the middle of a line too long to check
	problems []problem
	err      error // the source's error, other than io.EOF
}

func newRemoteOnly(r io.Reader) *remoteOnly {
	// Room for the longest line the reader accepts, its line ending and a byte order mark.
	return &remoteOnly{br: bufio.NewReaderSize(r, jobs.DefaultMaxLineBytes+64)}
}

func (f *remoteOnly) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		b, err := f.br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			if !f.passing {
				f.passing = true
				f.line++
			}
			f.pending = b
			continue
		case err != nil && err != io.EOF:
			f.err = err
			return 0, err
		case len(b) == 0:
			return 0, io.EOF
		}
		if f.passing { // the end of an over-long line
			f.passing = false
			f.pending = b
			continue
		}
		f.line++
		if v, local := localInputImage(b, f.line == 1); local {
			f.problems = append(f.problems, problem{Line: f.line, Field: "inputImage", Message: localRefused + " (got " + quoteShort(v) + ")"})
			f.pending = []byte("\n")
			continue
		}
		f.pending = b
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

var bom = []byte("\xEF\xBB\xBF")

// localInputImage reports a line whose top-level "inputImage" (Kie's exact, case-sensitive
// name, as the reader matches it) is a non-empty string that is not an http(s) URL. A line that
// is not a readable JSON object is left to the reader, which refuses it without reading fields.
func localInputImage(line []byte, first bool) (string, bool) {
	if first {
		line = bytes.TrimPrefix(line, bom)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return "", false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", false
		}
		if key, _ := tok.(string); key != "inputImage" {
			continue
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			continue // not a string: the reader says so
		}
		if v != "" && !remoteURL(v) {
			return v, true
		}
	}
	return "", false
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}
