package jobs

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
)

// NameTemplate says what a job's archived image is called, from where the job came from and
// what it asks for: "{line:06}-{slug}" names the image of line 12, "a red fox in snow", as
// "000012-a-red-fox-in-snow.jpeg". The default, "{id}", names it by its job id.
//
// Placeholders:
//
//	{id}        the job id
//	{line}      the line of the job file the job starts on; {line:06} pads it with zeros to 6 digits
//	{slug}      the prompt in lower case, letters and digits only, words joined by "-", at most
//	            40 characters; {slug:N} at most N
//	{file}      the job file's name without its directory and extension
//	{batch}     the batch
//
// A rendered name is made file-name safe (anything but ASCII letters, digits, "-", "_" and "."
// becomes "-") and at most 120 bytes long. It is fixed when the job is first loaded, so loading
// the file again, even edited or with another template, never renames an archived image. The
// ledger keeps names unique within a batch: a name another job already holds gets "-<id>"
// appended.
type NameTemplate struct {
	src   string
	parts []namePart
}

type namePart struct {
	lit  string
	key  string // "" for a literal
	size int    // zero padding of {line}, length of {slug}
}

// DefaultNameTemplate names an image by its job id.
const DefaultNameTemplate = "{id}"

// maxName bounds a rendered name, leaving room for suffixes (".origin.jpeg", "-<id>") within
// the 255 bytes a file name may have.
const maxName = 120

const defaultSlug = 40

// NamePlaceholders lists the placeholders a NameTemplate accepts, for messages.
const NamePlaceholders = "{id}, {line}, {line:0N}, {slug}, {slug:N}, {file}, {batch}"

// ParseNameTemplate reads a template. It refuses an unknown or malformed placeholder, and a
// template without any placeholder (every job would want the same name).
func ParseNameTemplate(s string) (*NameTemplate, error) {
	t := &NameTemplate{src: s}
	rest := s
	placeholders := 0
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			t.parts = append(t.parts, namePart{lit: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, namePart{lit: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q: unclosed %q; placeholders are %s", s, rest[open:], NamePlaceholders)
		}
		p, err := parsePlaceholder(rest[open+1 : open+end])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		t.parts = append(t.parts, p)
		placeholders++
		rest = rest[open+end+1:]
	}
	if placeholders == 0 {
		return nil, fmt.Errorf("%q has no placeholder, so every image would want the same name; use some of %s", s, NamePlaceholders)
	}
	return t, nil
}

func parsePlaceholder(in string) (namePart, error) {
	key, arg, hasArg := strings.Cut(in, ":")
	bad := func(why string) (namePart, error) {
		return namePart{}, fmt.Errorf("{%s}: %s; placeholders are %s", in, why, NamePlaceholders)
	}
	p := namePart{key: key}
	switch key {
	case "id", "file", "batch":
		if hasArg {
			return bad("takes no argument")
		}
	case "line":
		if hasArg {
			n, err := strconv.Atoi(arg)
			if err != nil || !strings.HasPrefix(arg, "0") || n < 1 || n > 12 {
				return bad("pad the line with {line:0N}, N from 1 to 12")
			}
			p.size = n
		}
	case "slug":
		p.size = defaultSlug
		if hasArg {
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > maxName {
				return bad(fmt.Sprintf("{slug:N} takes N from 1 to %d", maxName))
			}
			p.size = n
		}
	default:
		return bad("unknown placeholder")
	}
	return p, nil
}

// String is the template as given.
func (t *NameTemplate) String() string { return t.src }

// Name renders the name of s's archived files. It is "" when the template is the default (the
// id) or renders nothing file-name safe: the job is then named by its id.
func (t *NameTemplate) Name(s *Spec) string {
	if t == nil || t.src == DefaultNameTemplate {
		return ""
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.key {
		case "":
			b.WriteString(p.lit)
		case "id":
			b.WriteString(s.ID)
		case "batch":
			b.WriteString(s.Batch)
		case "file":
			base := filepath.Base(s.File)
			if s.File == "" {
				base = ""
			}
			b.WriteString(strings.TrimSuffix(base, filepath.Ext(base)))
		case "line":
			b.WriteString(fmt.Sprintf("%0*d", p.size, s.Line))
		case "slug":
			b.WriteString(slug(s.Prompt, p.size))
		}
	}
	name := safeName(b.String())
	if name == s.ID {
		return ""
	}
	return name
}

// slug is the prompt's words in lower-case ASCII letters and digits, joined by "-", cut at a
// word boundary to at most n bytes (mid-word only when the first word is longer).
func slug(prompt string, n int) string {
	var words []string
	for w := range strings.FieldsFuncSeq(strings.ToLower(prompt), func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)))
	}) {
		words = append(words, w)
	}
	out := ""
	for _, w := range words {
		next := w
		if out != "" {
			next = out + "-" + w
		}
		if len(next) > n {
			if out == "" {
				out = w[:n]
			}
			break
		}
		out = next
	}
	return out
}

// safeName keeps ASCII letters, digits, "-", "_" and "."; anything else becomes "-". Runs of
// "-" collapse, and the name neither starts with "." or "-" (hidden files, options) nor ends
// with "." or "-"; it is cut to maxName bytes.
func safeName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range s {
		ok := r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '.')
		if !ok {
			if !dash {
				b.WriteByte('-')
			}
			dash = true
			continue
		}
		b.WriteRune(r)
		dash = false
	}
	out := b.String()
	if len(out) > maxName {
		out = out[:maxName]
	}
	return strings.Trim(out, ".-")
}
