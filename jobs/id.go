package jobs

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"strconv"
)

// Kie's documented defaults. A field left unset and the same field set to its default ask
// Kie for the same image, so they derive the same id: re-loading a file with
// "model": "flux-kontext-pro" added to every line (or given as a default on the command
// line) adds nothing.
const (
	defaultModel             = "flux-kontext-pro"
	defaultOutputFormat      = "jpeg"
	defaultAspectRatio       = "16:9" // generation only: an edit without one keeps the input's ratio
	defaultSafetyTolerance   = 2
	defaultPromptUpsampling  = false
	defaultEnableTranslation = true
	defaultUploadCn          = false
)

// idVersion is hashed first so that a future change of the canonical encoding is a
// deliberate, visible step rather than a silent change of every derived id.
const idVersion = "kontextq/job/v1"

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// DeriveID returns the job id of s: s.ID when it is set, otherwise an id derived from the
// batch and every request field (Kie's defaults applied first, see above) together with
// occurrence, the 1-based number of this request among identical requests of its file.
// So re-loading a file derives the same ids and adds nothing, while two identical lines
// still mean two images. occurrence values below 1 count as 1.
//
// A derived id is "j" followed by 24 characters of lowercase base32 (the first 15 bytes of
// a SHA-256), safe as a file name. It is stable across versions of kontextq. A local
// inputImage takes part as its path, not its content: moving the input files to another
// directory changes the ids derived for edits; give explicit ids where that matters.
func DeriveID(s *Spec, occurrence int) string {
	if s.ID != "" {
		return s.ID
	}
	if occurrence < 1 {
		occurrence = 1
	}
	b := canonical(s)
	b = binary.AppendUvarint(append(b, "occurrence"...), uint64(occurrence))
	sum := sha256.Sum256(b)
	return "j" + idEncoding.EncodeToString(sum[:15])
}

// contentKey identifies a request for counting occurrences: 16 bytes make collisions
// impossible in practice while keeping the reader's counter map small.
func contentKey(s *Spec) [16]byte {
	sum := sha256.Sum256(canonical(s))
	return [16]byte(sum[:16])
}

// explicitIDKey identifies an explicit id in the same counter map; the prefix keeps it
// apart from content keys.
func explicitIDKey(id string) [16]byte {
	sum := sha256.Sum256([]byte("kontextq/explicit-id\x00" + id))
	return [16]byte(sum[:16])
}

// canonical encodes the batch and the request with Kie's defaults applied, in a fixed
// field order, each value length-prefixed so that no two different requests encode alike:
// idVersion, then per field its name, a NUL byte, the value's length as a uvarint and the
// value (booleans "true"/"false", numbers in decimal). DeriveID hashes this followed by
// "occurrence" and the occurrence as a uvarint. Changing this function changes every
// derived id.
func canonical(s *Spec) []byte {
	b := make([]byte, 0, 64+len(s.Batch)+len(s.Prompt)+len(s.InputImage)+len(s.Watermark))
	b = append(b, idVersion...)
	field := func(name, value string) {
		b = append(b, name...)
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(len(value)))
		b = append(b, value...)
	}
	aspect := s.AspectRatio
	if aspect == "" && !s.IsEdit() {
		aspect = defaultAspectRatio
	}
	field("batch", s.Batch)
	field("prompt", s.Prompt)
	field("inputImage", s.InputImage)
	field("aspectRatio", aspect)
	field("model", or(s.Model, defaultModel))
	field("outputFormat", or(s.OutputFormat, defaultOutputFormat))
	field("promptUpsampling", strconv.FormatBool(boolOr(s.PromptUpsampling, defaultPromptUpsampling)))
	field("safetyTolerance", strconv.Itoa(intOr(s.SafetyTolerance, defaultSafetyTolerance)))
	field("enableTranslation", strconv.FormatBool(boolOr(s.EnableTranslation, defaultEnableTranslation)))
	field("watermark", s.Watermark)
	field("uploadCn", strconv.FormatBool(boolOr(s.UploadCn, defaultUploadCn)))
	return b
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
