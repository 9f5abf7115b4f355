package jobs

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kontextq/kontextq/internal/suggest"
)

// The fields a job line may set: Kie's names, case-sensitive, as in the generate request.
type fieldKind uint8

const (
	kindString fieldKind = iota
	kindBool
	kindInt
)

var lineFields = []struct {
	name string
	kind fieldKind
}{
	{"id", kindString},
	{"prompt", kindString},
	{"inputImage", kindString},
	{"aspectRatio", kindString},
	{"model", kindString},
	{"outputFormat", kindString},
	{"promptUpsampling", kindBool},
	{"safetyTolerance", kindInt},
	{"enableTranslation", kindBool},
	{"watermark", kindString},
	{"uploadCn", kindBool},
}

func fieldIndex(name string) int {
	for i, f := range lineFields {
		if f.name == name {
			return i
		}
	}
	return -1
}

func stringField(s *Spec, name string) *string {
	switch name {
	case "id":
		return &s.ID
	case "prompt":
		return &s.Prompt
	case "inputImage":
		return &s.InputImage
	case "aspectRatio":
		return &s.AspectRatio
	case "model":
		return &s.Model
	case "outputFormat":
		return &s.OutputFormat
	case "watermark":
		return &s.Watermark
	}
	return nil
}

func boolField(s *Spec, name string) **bool {
	switch name {
	case "promptUpsampling":
		return &s.PromptUpsampling
	case "enableTranslation":
		return &s.EnableTranslation
	case "uploadCn":
		return &s.UploadCn
	}
	return nil
}

// Names that are real settings but not a line's to give.
var notPerLine = map[string]string{
	"batch":       "is set for the whole file, not per line",
	"callBackUrl": "is set by kontextq, not per line",
}

// unknownField is the problem for a name that is not a job field: typos such as
// "aspect_ratio" must not be silently ignored, and the right name is suggested.
func unknownField(name, what string) Problem {
	if msg, ok := notPerLine[name]; ok {
		return Problem{Field: name, Message: msg}
	}
	msg := "unknown " + what
	if s := suggestField(name); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return Problem{Field: name, Message: msg}
}

// Other names people use for Kie's fields.
var fieldAliases = map[string]string{
	"image":         "inputImage",
	"imageurl":      "inputImage",
	"inputimageurl": "inputImage",
	"url":           "inputImage",
	"ratio":         "aspectRatio",
	"aspect":        "aspectRatio",
	"format":        "outputFormat",
	"safety":        "safetyTolerance",
	"upsampling":    "promptUpsampling",
	"translate":     "enableTranslation",
	"translation":   "enableTranslation",
	"text":          "prompt",
}

func suggestField(name string) string {
	key := squash(name)
	if key == "" {
		return ""
	}
	for _, f := range lineFields {
		if squash(f.name) == key {
			return f.name
		}
	}
	if a, ok := fieldAliases[key]; ok {
		return a
	}
	best, bestD := "", 3
	for _, f := range lineFields {
		target := squash(f.name)
		if d := suggest.Distance(key, target); d < bestD && d*3 <= len(target) {
			best, bestD = f.name, d
		}
	}
	return best
}

// squash folds the spelling differences that do not matter to a reader: case and
// separators, so "aspect_ratio", "Aspect-Ratio" and "aspectratio" all meet "aspectRatio".
func squash(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r != '_' && r != '-' && r != ' ' && r != '.' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// parseCell sets field name of s from a CSV cell; an empty cell has already been taken as
// "not set". Booleans are true/false in any case (spreadsheets write TRUE) or 1/0. Text is
// taken exactly as written: Kie's values have no spaces to trim, and a prompt's are its own.
func parseCell(s *Spec, name, cell string) *Problem {
	switch lineFields[fieldIndex(name)].kind {
	case kindBool:
		var v bool
		switch strings.ToLower(strings.TrimSpace(cell)) {
		case "true", "1":
			v = true
		case "false", "0":
			v = false
		default:
			return &Problem{name, fmt.Sprintf("%s is not a boolean (true, false, 1 or 0)", quote(cell))}
		}
		*boolField(s, name) = &v
	case kindInt:
		v, err := strconv.Atoi(strings.TrimSpace(cell))
		if err != nil {
			return &Problem{name, fmt.Sprintf("%s is not a whole number", quote(cell))}
		}
		s.SafetyTolerance = &v
	default:
		*stringField(s, name) = cell
	}
	return nil
}
