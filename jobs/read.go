package jobs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Format is the layout of a bulk job file.
type Format string

const (
	FormatJSONL Format = "jsonl" // one JSON object per line, Kie's field names
	FormatCSV   Format = "csv"   // a header row of Kie's field names, then one job per record
	FormatText  Format = "text"  // one prompt per line; "#" starts a comment line
)

// FormatFor returns the format of the file at path: explicit when it is not empty, otherwise
// the one its extension names (.jsonl .ndjson .json, .csv, .txt .text). A .json file is read
// as JSONL; a JSON array is reported as such on its first line.
func FormatFor(path string, explicit string) (Format, error) {
	if explicit != "" {
		switch strings.ToLower(explicit) {
		case "jsonl", "ndjson", "json":
			return FormatJSONL, nil
		case "csv":
			return FormatCSV, nil
		case "text", "txt":
			return FormatText, nil
		}
		return "", fmt.Errorf("jobs: format %q: want jsonl, csv or text", explicit)
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL, nil
	case ".csv":
		return FormatCSV, nil
	case ".txt", ".text":
		return FormatText, nil
	}
	return "", fmt.Errorf("jobs: cannot tell the format of %q from its name (want .jsonl, .ndjson, .json, .csv or .txt): name the format explicitly (jsonl, csv or text)", path)
}

// DefaultMaxLineBytes is the longest line (or CSV record) a Reader accepts unless told
// otherwise: a prompt is at most 10,000 bytes, so a longer line is a mistake, and the
// limit is what keeps a reader's memory constant.
const DefaultMaxLineBytes = 1 << 20

// ReadOptions configures a Reader. The zero value is usable.
type ReadOptions struct {
	// Batch is set on every spec read. Empty means no batch.
	Batch string
	// Defaults gives the fields a line leaves out (typically from command-line flags).
	// Its ID, Batch and Prompt are ignored. A relative Defaults.InputImage resolves
	// against the current directory, since it did not come from the file.
	Defaults Spec
	// BaseDir is what relative local inputImage paths in the file resolve against,
	// normally the input file's directory; empty means the current directory. Specs
	// hold the absolute path.
	BaseDir string
	// MaxLineBytes limits a line (a CSV record) without its line ending; default
	// DefaultMaxLineBytes. A longer line is a *LineError and reading continues after it.
	MaxLineBytes int
	// MaxInputImageBytes limits local inputImage files; default the package variable
	// MaxInputImageBytes.
	MaxInputImageBytes int64
}

// Item is one job read from a file: Spec is validated, its ID set (explicit or derived)
// and its Batch set. Line is the 1-based line where it starts.
type Item struct {
	Line int
	Spec Spec
}

// ErrNoJobs is returned (wrapped, naming the file) when a file holds no job lines and no
// bad lines either: an empty file is almost certainly the wrong file.
var ErrNoJobs = errors.New("no jobs")

// ErrNotText is the cause of the *LineError a Reader returns for a binary file, after which
// it stops.
var ErrNotText = errors.New("not a text file")

// LineError is a bad line. File and Line locate it, Field is Kie's name of the field at
// fault ("" when the line as a whole is bad), Msg says what is wrong, and Raw holds the
// start of the line (at most 200 bytes) for display. When a line has several problems
// Problems lists them all and Field and Msg are the first.
type LineError struct {
	File     string
	Line     int
	Field    string
	Msg      string
	Raw      string
	Problems []Problem
	// Err is the cause when there is one to test for: a *ValidationError, ErrNotText.
	Err error
}

func (e *LineError) Error() string {
	prefix := fmt.Sprintf("%s:%d: ", e.File, e.Line)
	if len(e.Problems) > 1 {
		parts := make([]string, len(e.Problems))
		for i, p := range e.Problems {
			parts[i] = p.String()
		}
		return prefix + strings.Join(parts, "; ")
	}
	if e.Field == "" {
		return prefix + e.Msg
	}
	return prefix + e.Field + ": " + e.Msg
}

func (e *LineError) Unwrap() error { return e.Err }

// Reader reads jobs from a JSONL, CSV or plain-text stream, one line (one CSV record) at a
// time, so its memory does not grow with the file; the exception is the counter that
// numbers identical requests for DeriveID, about 20-50 bytes per distinct request
// (tens of MB for a million distinct lines). Duplicate explicit ids within the file are
// found with the same counter.
type Reader struct {
	name     string
	format   Format
	opts     ReadOptions
	lr       lineReader
	csv      csvState
	seen     map[[16]byte]uint32
	items    int
	bad      int
	started  bool
	stop     error // returned by every later Next: io.EOF, or the read error
	maxImage int64
}

// NewReader returns a Reader of r in format f; name is the file name used in errors. It
// checks the options (batch name, defaults) before any line is read.
func NewReader(r io.Reader, name string, f Format, o ReadOptions) (*Reader, error) {
	switch f {
	case FormatJSONL, FormatCSV, FormatText:
	default:
		return nil, fmt.Errorf("jobs: read %s: format %q: want jsonl, csv or text", name, f)
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	maxImage := o.MaxInputImageBytes
	if maxImage <= 0 {
		maxImage = MaxInputImageBytes
	}
	if o.Defaults.InputImage != "" && !looksLikeURL(o.Defaults.InputImage) {
		abs, err := filepath.Abs(o.Defaults.InputImage)
		if err != nil {
			return nil, fmt.Errorf("jobs: read %s: default inputImage: %w", name, err)
		}
		o.Defaults.InputImage = abs
	}
	if o.BaseDir != "" {
		abs, err := filepath.Abs(o.BaseDir)
		if err != nil {
			return nil, fmt.Errorf("jobs: read %s: base directory: %w", name, err)
		}
		o.BaseDir = abs
	}
	d := o.Defaults
	d.ID, d.Prompt, d.Batch = "", "defaults", o.Batch
	if err := d.validate(maxImage); err != nil {
		return nil, fmt.Errorf("jobs: read %s: options: %w", name, err)
	}
	bufSize := max(o.MaxLineBytes+2, sampleBytes)
	return &Reader{
		name:     name,
		format:   f,
		opts:     o,
		lr:       lineReader{br: bufio.NewReaderSize(r, bufSize), max: o.MaxLineBytes},
		seen:     make(map[[16]byte]uint32),
		maxImage: maxImage,
	}, nil
}

// Lines returns the number of lines consumed so far.
func (r *Reader) Lines() int { return r.lr.n }

// Next returns the next job. At the end it returns io.EOF, or an error wrapping ErrNoJobs
// when the file held neither jobs nor bad lines. A bad line is a *LineError and the
// caller may go on calling Next; after a *LineError wrapping ErrNotText, or a CSV header
// that cannot be read, Next returns io.EOF. Any other error is a read error and is
// returned again by every later call.
func (r *Reader) Next() (Item, error) {
	if r.stop != nil {
		return Item{}, r.stop
	}
	if !r.started {
		r.started = true
		if le := r.checkSample(); le != nil {
			return r.fatal(le)
		}
	}
	var it Item
	var err error
	switch r.format {
	case FormatJSONL:
		it, err = r.nextJSONL()
	case FormatCSV:
		it, err = r.nextCSV()
	default:
		it, err = r.nextText()
	}
	var le *LineError
	switch {
	case err == nil:
		r.items++
		return it, nil
	case errors.As(err, &le):
		r.bad++
		if errors.Is(le, ErrNotText) {
			return r.fatal(le)
		}
		return Item{}, le
	case err == io.EOF:
		r.stop = io.EOF
		if r.items == 0 && r.bad == 0 {
			return Item{}, fmt.Errorf("%s: %w", r.name, ErrNoJobs)
		}
		return Item{}, io.EOF
	default:
		r.stop = fmt.Errorf("jobs: read %s after line %d: %w", r.name, r.lr.n, err)
		return Item{}, r.stop
	}
}

// fatal reports le and ends the stream: what follows cannot be trusted to be jobs.
func (r *Reader) fatal(le *LineError) (Item, error) {
	r.stop = io.EOF
	return Item{}, le
}

// lineErr builds the error for a bad line from one or more problems.
func (r *Reader) lineErr(line int, raw []byte, cause error, ps ...Problem) *LineError {
	le := &LineError{File: r.name, Line: line, Raw: display(raw), Err: cause}
	if len(ps) > 0 {
		le.Field, le.Msg = ps[0].Field, ps[0].Message
	}
	if len(ps) > 1 {
		le.Problems = ps
	}
	return le
}

func (r *Reader) notText(line int, raw []byte, why string) *LineError {
	return r.lineErr(line, raw, ErrNotText, Problem{Message: "not a text file (" + why + "); stopped reading"})
}

// finish turns the fields read from one line into an Item: options applied, inputImage
// resolved, validated, and given its id.
// Problems found while reading the line come first; validation adds those about the
// other fields, so one pass over a bad file shows everything to fix.
func (r *Reader) finish(line int, raw []byte, s Spec, ps []Problem) (Item, error) {
	for _, p := range ps {
		if p.Field == "" { // the line itself is unreadable: its fields mean nothing
			return Item{}, r.lineErr(line, raw, nil, ps...)
		}
	}
	applyDefaults(&s, &r.opts.Defaults)
	s.Batch = r.opts.Batch
	if s.InputImage != "" && !looksLikeURL(s.InputImage) && !strings.HasPrefix(s.InputImage, "data:") &&
		!filepath.IsAbs(s.InputImage) && utf8.ValidString(s.InputImage) {
		p, err := filepath.Abs(filepath.Join(r.opts.BaseDir, s.InputImage))
		if err != nil {
			return Item{}, r.lineErr(line, raw, err, Problem{"inputImage", fmt.Sprintf("%s: cannot resolve: %v", quote(s.InputImage), err)})
		}
		s.InputImage = p
	}
	var cause error
	if err := s.validate(r.maxImage); err != nil {
		ve := err.(*ValidationError)
		cause = ve
		for _, vp := range ve.Problems {
			if !slices.ContainsFunc(ps, func(p Problem) bool { return p.Field == vp.Field }) {
				ps = append(ps, vp)
			}
		}
	}
	if len(ps) > 0 {
		return Item{}, r.lineErr(line, raw, cause, ps...)
	}
	if s.ID != "" {
		k := explicitIDKey(s.ID)
		if first, ok := r.seen[k]; ok {
			return Item{}, r.lineErr(line, raw, nil, Problem{"id", fmt.Sprintf("%s is already used on line %d", quote(s.ID), first)})
		}
		r.seen[k] = uint32(line)
	} else {
		k := contentKey(&s)
		n := r.seen[k] + 1
		r.seen[k] = n
		s.ID = DeriveID(&s, int(n))
	}
	return Item{Line: line, Spec: s}, nil
}

func applyDefaults(s, d *Spec) {
	if s.InputImage == "" {
		s.InputImage = d.InputImage
	}
	if s.AspectRatio == "" {
		s.AspectRatio = d.AspectRatio
	}
	if s.Model == "" {
		s.Model = d.Model
	}
	if s.OutputFormat == "" {
		s.OutputFormat = d.OutputFormat
	}
	if s.PromptUpsampling == nil && d.PromptUpsampling != nil {
		v := *d.PromptUpsampling
		s.PromptUpsampling = &v
	}
	if s.SafetyTolerance == nil && d.SafetyTolerance != nil {
		v := *d.SafetyTolerance
		s.SafetyTolerance = &v
	}
	if s.EnableTranslation == nil && d.EnableTranslation != nil {
		v := *d.EnableTranslation
		s.EnableTranslation = &v
	}
	if s.Watermark == "" {
		s.Watermark = d.Watermark
	}
	if s.UploadCn == nil && d.UploadCn != nil {
		v := *d.UploadCn
		s.UploadCn = &v
	}
}

// sampleBytes is how much of the start of a file is inspected to tell text from binary.
const sampleBytes = 8192

// checkSample refuses binary files at once rather than reporting every "line" of an image
// or an archive someone passed by mistake.
func (r *Reader) checkSample() *LineError {
	sample, _ := r.lr.br.Peek(sampleBytes)
	why := binaryReason(sample)
	if why == "" {
		return nil
	}
	// In a text file damaged further on, name the line with the first NUL: that is the
	// place to look. A file that is binary from its first byte is named at line 1.
	start := 0
	if i := bytes.IndexByte(sample, 0); i >= 0 {
		start = bytes.LastIndexByte(sample[:i], '\n') + 1
		if !plainText(sample[:start]) {
			start = 0
		}
	}
	line := sample[start:]
	if end := bytes.IndexByte(line, '\n'); end >= 0 {
		line = line[:end]
	}
	return r.notText(1+bytes.Count(sample[:start], []byte("\n")), line, why)
}

func binaryReason(sample []byte) string {
	if bytes.HasPrefix(sample, []byte{0xFF, 0xFE}) || bytes.HasPrefix(sample, []byte{0xFE, 0xFF}) {
		return "it is UTF-16; save it as UTF-8"
	}
	if bytes.IndexByte(sample, 0) >= 0 {
		return "it contains NUL bytes"
	}
	// A multi-byte character cut by the end of the sample is not evidence of anything.
	body := sample
	if len(body) == sampleBytes {
		body = body[:len(body)-utf8.UTFMax]
	}
	if len(body) > 0 && oddBytes(body)*10 > len(body)*3 {
		return "it is mostly binary data"
	}
	return ""
}

// oddBytes counts the bytes that do not belong in text: control characters other than
// white space, and bytes that are not part of valid UTF-8.
func oddBytes(b []byte) int {
	odd := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
				odd++
			}
			i++
			continue
		}
		ru, size := utf8.DecodeRune(b[i:])
		if ru == utf8.RuneError && size == 1 {
			odd++
		}
		i += size
	}
	return odd
}

func plainText(b []byte) bool { return oddBytes(b) == 0 }

// display is the start of a line as LineError.Raw keeps it.
func display(raw []byte) string {
	const max = 200
	if len(raw) <= max {
		return string(raw)
	}
	cut := max
	for cut > max-utf8.UTFMax && !utf8.RuneStart(raw[cut]) {
		cut--
	}
	return string(raw[:cut])
}

// lineReader yields physical lines through a buffer of fixed size.
type lineReader struct {
	br  *bufio.Reader
	max int
	n   int // lines consumed
}

// next returns the next line without its line ending (and without a UTF-8 byte order mark
// on the first line). When the line is longer than max, line holds only its first bytes
// and long its full length; the rest has been skipped. At the end err is io.EOF. The line
// is valid until the next call.
func (l *lineReader) next() (line []byte, long int, err error) {
	b, err := l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		head := append([]byte(nil), b[:min(len(b), 256)]...)
		total := len(b)
		for err == bufio.ErrBufferFull {
			b, err = l.br.ReadSlice('\n')
			total += len(b)
		}
		if err != nil && err != io.EOF {
			return nil, 0, err
		}
		l.n++
		if l.n == 1 {
			head = bytes.TrimPrefix(head, bom)
		}
		return head, total - trailingNewline(b), nil
	}
	if err != nil && err != io.EOF {
		return nil, 0, err
	}
	if len(b) == 0 {
		return nil, 0, io.EOF
	}
	l.n++
	b = b[:len(b)-trailingNewline(b)]
	if l.n == 1 {
		b = bytes.TrimPrefix(b, bom)
	}
	if len(b) > l.max {
		return b[:min(len(b), 256)], len(b), nil
	}
	return b, 0, nil
}

var bom = []byte("\xEF\xBB\xBF")

func trailingNewline(b []byte) int {
	switch {
	case bytes.HasSuffix(b, []byte("\r\n")):
		return 2
	case bytes.HasSuffix(b, []byte("\n")):
		return 1
	}
	return 0
}

// tooLong is the problem reported for a line over the limit.
func tooLong(n, limit int) Problem {
	return Problem{Message: fmt.Sprintf("line is %d bytes; at most %d bytes", n, limit)}
}

// isBlank reports whether a line holds only white space.
func isBlank(b []byte) bool {
	return len(bytes.TrimSpace(b)) == 0
}

// line returns the next physical line, refusing one with a NUL byte: no text file has one,
// so the rest of the stream is not worth reading as jobs.
func (r *Reader) line() (b []byte, long int, err error) {
	b, long, err = r.lr.next()
	if err == nil && bytes.IndexByte(b, 0) >= 0 {
		return nil, 0, r.notText(r.lr.n, b, "NUL byte on this line")
	}
	return b, long, err
}
