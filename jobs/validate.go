package jobs

import (
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // inputImage files are checked with image.DecodeConfig
	_ "image/png"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	_ "golang.org/x/image/webp"
)

// Limits Kie enforces on a request, mirrored here so that a bad job is refused at load time
// instead of costing a rate-limit token and coming back as a 422 or 500.
const (
	MaxPromptBytes    = 10000
	MaxWatermarkBytes = 256
	MaxIDLen          = 128
	MaxBatchLen       = 64
)

// MaxInputImageBytes is the default size limit for a local inputImage file. Kie does not
// document one; 20 MiB is far above any photo it handles well and keeps uploads quick.
var MaxInputImageBytes int64 = 20 << 20

var (
	aspectRatios  = []string{"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"}
	models        = []string{"flux-kontext-pro", "flux-kontext-max"}
	outputFormats = []string{"jpeg", "png"}
	// Only formats Kie is known to accept; DecodeConfig may know more if another package
	// registers a decoder, so the name is checked too.
	imageFormats = []string{"png", "jpeg", "webp"}
)

const (
	maxSafetyGenerate = 6
	maxSafetyEdit     = 2
)

// Problem is one thing wrong with a Spec. Field is Kie's JSON name of the field at fault.
type Problem struct {
	Field   string
	Message string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// ValidationError lists every problem found in a Spec, so a user fixes a line once instead
// of once per problem.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// Validate checks s against Kie's rules for the generate request, plus the rules that make
// the id and batch safe as file names in the archive. Unset optional fields are valid: Kie
// applies its defaults. A local inputImage is opened to check that it is an image, so
// Validate reads the file system. The error, if any, is a *ValidationError.
func (s *Spec) Validate() error {
	return s.validate(MaxInputImageBytes)
}

func (s *Spec) validate(maxImageBytes int64) error {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}

	if s.ID != "" {
		if msg := checkName(s.ID, MaxIDLen); msg != "" {
			add("id", "%s %s", quote(s.ID), msg)
		}
	}
	if s.Batch != "" {
		if msg := checkName(s.Batch, MaxBatchLen); msg != "" {
			add("batch", "%s %s", quote(s.Batch), msg)
		}
	}

	switch {
	case !utf8.ValidString(s.Prompt):
		add("prompt", "is not valid UTF-8")
	case strings.IndexByte(s.Prompt, 0) >= 0:
		add("prompt", "contains a NUL byte")
	case strings.TrimSpace(s.Prompt) == "":
		add("prompt", "is required")
	case len(s.Prompt) > MaxPromptBytes:
		add("prompt", "is %d bytes; at most %d bytes", len(s.Prompt), MaxPromptBytes)
	}

	if s.InputImage != "" {
		if msg := checkInputImage(s.InputImage, maxImageBytes); msg != "" {
			add("inputImage", "%s", msg)
		}
	}
	if msg := checkEnum(s.AspectRatio, aspectRatios); msg != "" {
		add("aspectRatio", "%s", msg)
	}
	if msg := checkEnum(s.Model, models); msg != "" {
		add("model", "%s", msg)
	}
	if msg := checkEnum(s.OutputFormat, outputFormats); msg != "" {
		add("outputFormat", "%s", msg)
	}
	if s.SafetyTolerance != nil {
		limit, mode := maxSafetyGenerate, "generation"
		if s.IsEdit() {
			limit, mode = maxSafetyEdit, "edits"
		}
		if v := *s.SafetyTolerance; v < 0 || v > limit {
			add("safetyTolerance", "%d is out of range 0..%d for %s", v, limit, mode)
		}
	}

	switch {
	case !utf8.ValidString(s.Watermark):
		add("watermark", "is not valid UTF-8")
	case strings.IndexByte(s.Watermark, 0) >= 0:
		add("watermark", "contains a NUL byte")
	case len(s.Watermark) > MaxWatermarkBytes:
		add("watermark", "is %d bytes; at most %d bytes", len(s.Watermark), MaxWatermarkBytes)
	}

	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// checkName enforces the shape of ids and batch names: they become file and directory
// names in the archive, so nothing that could climb out of a directory, hide a file, or
// read as a command-line flag.
func checkName(s string, maxLen int) string {
	const rule = "must be 1-%d characters of A-Z a-z 0-9 . _ - and must not start with . or -"
	if len(s) == 0 || len(s) > maxLen || s[0] == '.' || s[0] == '-' {
		return fmt.Sprintf(rule, maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Sprintf(rule, maxLen)
		}
	}
	return ""
}

func checkEnum(v string, allowed []string) string {
	if v == "" {
		return ""
	}
	if slices.Contains(allowed, v) {
		return ""
	}
	msg := fmt.Sprintf("%s is not one of %s", quote(v), strings.Join(allowed, ", "))
	if hint := enumHint(v, allowed); hint != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", hint)
	}
	return msg
}

// enumHint catches the near-misses people actually type: a different case, "jpg",
// surrounding spaces, or a ratio written with another separator.
var enumSpelling = strings.NewReplacer("/", ":", "x", ":", "jpg", "jpeg")

func enumHint(v string, allowed []string) string {
	norm := func(s string) string {
		return enumSpelling.Replace(strings.ToLower(strings.TrimSpace(s)))
	}
	nv := norm(v)
	for _, a := range allowed {
		if norm(a) == nv {
			return a
		}
	}
	return ""
}

// looksLikeURL separates URLs from local paths. Only "scheme://" counts: a path such as
// "a:b.png" is a legal file name.
func looksLikeURL(s string) bool {
	return strings.Contains(s, "://")
}

func checkInputImage(v string, maxBytes int64) string {
	if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return "is not valid UTF-8 text"
	}
	if looksLikeURL(v) {
		u, err := url.Parse(v)
		if err != nil {
			return fmt.Sprintf("%s is not a valid URL", quote(v))
		}
		if scheme := strings.ToLower(u.Scheme); scheme != "http" && scheme != "https" {
			return fmt.Sprintf("%s is not an http(s) URL or a local file", quote(v))
		}
		if u.Host == "" {
			return fmt.Sprintf("%s has no host", quote(v))
		}
		return ""
	}
	if strings.HasPrefix(v, "data:") {
		return "data: URLs are not accepted; give an http(s) URL or a local file"
	}

	fi, err := os.Stat(v)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: no such file", quote(v))
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("%s: permission denied", quote(v))
	case err != nil:
		return fmt.Sprintf("%s: cannot be read", quote(v))
	case fi.IsDir():
		return fmt.Sprintf("%s is a directory, not an image file", quote(v))
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%s is not a regular file", quote(v))
	case maxBytes > 0 && fi.Size() > maxBytes:
		return fmt.Sprintf("%s is %d bytes; at most %d bytes", quote(v), fi.Size(), maxBytes)
	}

	f, err := os.Open(v)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Sprintf("%s: permission denied", quote(v))
		}
		return fmt.Sprintf("%s: cannot be read", quote(v))
	}
	defer f.Close()
	_, format, err := image.DecodeConfig(f)
	if err != nil || !slices.Contains(imageFormats, format) {
		return fmt.Sprintf("%s is not an image (want png, jpeg or webp)", quote(v))
	}
	return ""
}

// quote shows a user's value in a message, cut short so that a pasted paragraph in the
// wrong column does not drown the error.
func quote(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
