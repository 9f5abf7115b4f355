package jobs

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// csvState is the CSV reader's memory between records. Records are cut from the stream by
// this package (it must bound their size and know their first line) and then parsed by
// encoding/csv, one record at a time.
type csvState struct {
	header  []string // column names, once read
	done    bool     // the header was bad: nothing after it can be read
	rec     []byte
	src     recordSource
	cr      *csv.Reader
	fed     int64 // bytes given to cr, to check it consumed exactly one record
	inQuote bool
}

// recordSource hands encoding/csv one record at a time.
type recordSource struct {
	b []byte
}

func (s *recordSource) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// nextCSV reads CSV as RFC 4180 writes it: a header row of Kie's field names (exact, case
// and all), then one job per record; quoted fields may hold commas and line breaks, an empty
// cell leaves its field unset, and a record whose cells are all empty is skipped like a
// blank line (spreadsheets write them). A record's line is the line it starts on.
func (r *Reader) nextCSV() (Item, error) {
	c := &r.csv
	for {
		if c.done {
			return Item{}, io.EOF
		}
		start, rec, err := r.csvRecord()
		if err != nil {
			return Item{}, err
		}
		fields, perr := r.parseCSVRecord(start, rec)
		if perr != nil {
			if c.header == nil {
				c.done = true // without a header no later record means anything
			}
			return Item{}, perr
		}
		if allEmpty(fields) {
			continue
		}
		if c.header == nil {
			if err := r.csvHeader(start, rec, fields); err != nil {
				c.done = true
				return Item{}, err
			}
			continue
		}
		if len(fields) != len(c.header) {
			return Item{}, r.lineErr(start, rec, nil, Problem{Message: fmt.Sprintf("has %s; the header has %d", plural(len(fields), "field"), len(c.header))})
		}
		var s Spec
		var ps []Problem
		for i, cell := range fields {
			if cell == "" {
				continue
			}
			name := c.header[i]
			if !utf8.ValidString(cell) {
				ps = append(ps, Problem{name, "is not valid UTF-8"})
				continue
			}
			if p := parseCell(&s, name, cell); p != nil {
				ps = append(ps, *p)
			}
		}
		return r.finish(start, rec, s, ps)
	}
}

// csvRecord returns the next non-blank record and the line it starts on. A record spans
// lines while a quoted field is open; it is bounded by MaxLineBytes like a line.
func (r *Reader) csvRecord() (start int, rec []byte, err error) {
	c := &r.csv
	c.rec = c.rec[:0]
	c.inQuote = false
	for {
		line, long, err := r.line()
		if err == io.EOF && len(c.rec) > 0 {
			return start, c.rec, r.lineErr(start, c.rec, nil, Problem{Message: "a quoted field is not closed by the end of the file"})
		}
		if err != nil {
			return 0, nil, err
		}
		if len(c.rec) == 0 {
			start = r.lr.n
			if long == 0 && isBlank(line) {
				continue
			}
		}
		if long > 0 || len(c.rec)+len(line)+1 > r.lr.max {
			p := tooLong(max(long, len(c.rec)+len(line)), r.lr.max)
			if c.inQuote {
				p.Message = fmt.Sprintf("record is longer than %d bytes: is a quoted field left open?", r.lr.max)
			}
			raw := c.rec
			if len(raw) == 0 {
				raw = line
			}
			return start, nil, r.lineErr(start, raw, nil, p)
		}
		c.rec = append(c.rec, line...)
		c.rec = append(c.rec, '\n')
		c.inQuote = scanQuotes(line, c.inQuote)
		if !c.inQuote {
			return start, c.rec, nil
		}
	}
}

// scanQuotes follows RFC 4180 quoting over one line and reports whether a quoted field is
// still open at its end (so the record goes on to the next line). inQuote is the state at
// the start of the line.
func scanQuotes(line []byte, inQuote bool) bool {
	fieldStart := !inQuote
	for i := 0; i < len(line); i++ {
		c := line[i]
		if inQuote {
			if c == '"' {
				if i+1 < len(line) && line[i+1] == '"' {
					i++
				} else {
					inQuote = false
				}
			}
			continue
		}
		if c == '"' && fieldStart {
			inQuote = true
		}
		fieldStart = c == ','
	}
	return inQuote
}

func (r *Reader) parseCSVRecord(start int, rec []byte) ([]string, error) {
	c := &r.csv
	if c.cr == nil {
		c.cr = csv.NewReader(&c.src)
		c.cr.FieldsPerRecord = -1
		c.cr.ReuseRecord = true
		c.fed = 0
	}
	c.src.b = rec
	c.fed += int64(len(rec))
	fields, err := c.cr.Read()
	if err != nil || c.cr.InputOffset() != c.fed || len(c.src.b) != 0 {
		// The csv.Reader may hold part of this record: start the next one afresh.
		c.cr = nil
		c.src.b = nil
	}
	if err != nil {
		line, msg := start, "invalid CSV"
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			line = start + pe.Line - pe.StartLine
			msg = csvMessage(pe.Err)
		}
		return nil, r.lineErr(line, rec, nil, Problem{Message: msg})
	}
	if c.cr == nil {
		return nil, r.lineErr(start, rec, nil, Problem{Message: "invalid CSV record"})
	}
	return fields, nil
}

func csvMessage(err error) string {
	switch {
	case errors.Is(err, csv.ErrBareQuote):
		return `a " inside a field that is not quoted: quote the field and double the inner quotes ("say ""hi""")`
	case errors.Is(err, csv.ErrQuote):
		return `a quoted field is followed by more text before the next comma (double a " inside a quoted field)`
	}
	return "invalid CSV: " + err.Error()
}

// csvHeader checks the header row. Every problem with it is reported at once and reading
// stops: rows cannot be read against a header that is wrong.
func (r *Reader) csvHeader(line int, raw []byte, cells []string) error {
	var ps []Problem
	names := make([]string, len(cells))
	seen := make(map[string]bool, len(cells))
	for i, cell := range cells {
		name := strings.TrimSpace(cell)
		names[i] = name
		switch {
		case name == "":
			ps = append(ps, Problem{Message: fmt.Sprintf("header: column %d has no name", i+1)})
		case fieldIndex(name) < 0:
			ps = append(ps, unknownField(name, "column"))
		case seen[name]:
			ps = append(ps, Problem{name, "column appears twice"})
		}
		seen[name] = true
	}
	if !seen["prompt"] {
		ps = append(ps, Problem{"prompt", "the header has no prompt column"})
	}
	if len(ps) > 0 {
		return r.lineErr(line, raw, nil, ps...)
	}
	r.csv.header = names
	return nil
}

func allEmpty(fields []string) bool {
	for _, f := range fields {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
