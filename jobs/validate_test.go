package jobs

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A 1x1 lossless WebP: there is no WebP encoder in Go to make one with.
const tinyWebP = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="

func testImage(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		img.Set(x, 0, color.RGBA{R: uint8(x), A: 255})
	}
	return img
}

// writeImage writes a small image file of the given kind (png, jpeg, webp, gif, text) and
// returns its path.
func writeImage(t testing.TB, dir, name, kind string) string {
	t.Helper()
	var buf bytes.Buffer
	switch kind {
	case "png":
		if err := png.Encode(&buf, testImage(8, 6)); err != nil {
			t.Fatal(err)
		}
	case "jpeg":
		if err := jpeg.Encode(&buf, testImage(8, 6), nil); err != nil {
			t.Fatal(err)
		}
	case "webp":
		b, err := base64.StdEncoding.DecodeString(tinyWebP)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	case "gif":
		if err := gif.Encode(&buf, testImage(8, 6), nil); err != nil {
			t.Fatal(err)
		}
	case "text":
		buf.WriteString("this is not an image\n")
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pngPath := writeImage(t, dir, "a.png", "png")
	jpegPath := writeImage(t, dir, "b.jpg", "jpeg")
	webpPath := writeImage(t, dir, "c.webp", "webp")
	gifPath := writeImage(t, dir, "d.gif", "gif")
	textPath := writeImage(t, dir, "e.png", "text")
	missing := filepath.Join(dir, "missing.png")

	type want struct{ field, msg string } // msg: a substring of the message
	tests := []struct {
		name string
		spec Spec
		want []want // nil: valid
	}{
		{"minimal generation", Spec{Prompt: "a cat"}, nil},
		{"every field set", Spec{ID: "cat-1", Batch: "b1", Prompt: "a cat", AspectRatio: "1:1", Model: "flux-kontext-max",
			OutputFormat: "png", PromptUpsampling: ptr(true), SafetyTolerance: ptr(6), EnableTranslation: ptr(false),
			Watermark: "wm", UploadCn: ptr(false)}, nil},

		{"prompt empty", Spec{}, []want{{"prompt", "is required"}}},
		{"prompt only spaces", Spec{Prompt: " \t\n"}, []want{{"prompt", "is required"}}},
		{"prompt at the limit", Spec{Prompt: strings.Repeat("a", 10000)}, nil},
		{"prompt over the limit", Spec{Prompt: strings.Repeat("a", 10001)}, []want{{"prompt", "is 10001 bytes; at most 10000 bytes"}}},
		{"prompt limit counts bytes", Spec{Prompt: strings.Repeat("é", 5001)}, []want{{"prompt", "at most 10000 bytes"}}},
		{"prompt invalid UTF-8", Spec{Prompt: "a \xff cat"}, []want{{"prompt", "is not valid UTF-8"}}},
		{"prompt with NUL", Spec{Prompt: "a\x00cat"}, []want{{"prompt", "contains a NUL byte"}}},

		{"aspectRatio 21:9", Spec{Prompt: "p", AspectRatio: "21:9"}, nil},
		{"aspectRatio 16:9", Spec{Prompt: "p", AspectRatio: "16:9"}, nil},
		{"aspectRatio 4:3", Spec{Prompt: "p", AspectRatio: "4:3"}, nil},
		{"aspectRatio 1:1", Spec{Prompt: "p", AspectRatio: "1:1"}, nil},
		{"aspectRatio 3:4", Spec{Prompt: "p", AspectRatio: "3:4"}, nil},
		{"aspectRatio 9:16", Spec{Prompt: "p", AspectRatio: "9:16"}, nil},
		{"aspectRatio unknown", Spec{Prompt: "p", AspectRatio: "2:1"},
			[]want{{"aspectRatio", `"2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16`}}},
		{"aspectRatio near miss", Spec{Prompt: "p", AspectRatio: "16x9"}, []want{{"aspectRatio", `(did you mean "16:9"?)`}}},

		{"model pro", Spec{Prompt: "p", Model: "flux-kontext-pro"}, nil},
		{"model max", Spec{Prompt: "p", Model: "flux-kontext-max"}, nil},
		{"model unknown", Spec{Prompt: "p", Model: "flux-kontext-ultra"},
			[]want{{"model", `"flux-kontext-ultra" is not one of flux-kontext-pro, flux-kontext-max`}}},
		{"model wrong case", Spec{Prompt: "p", Model: "Flux-Kontext-Max"}, []want{{"model", `did you mean "flux-kontext-max"`}}},

		{"outputFormat jpeg", Spec{Prompt: "p", OutputFormat: "jpeg"}, nil},
		{"outputFormat png", Spec{Prompt: "p", OutputFormat: "png"}, nil},
		{"outputFormat jpg", Spec{Prompt: "p", OutputFormat: "jpg"}, []want{{"outputFormat", `"jpg" is not one of jpeg, png (did you mean "jpeg"?)`}}},

		{"safetyTolerance 0", Spec{Prompt: "p", SafetyTolerance: ptr(0)}, nil},
		{"safetyTolerance 6 for generation", Spec{Prompt: "p", SafetyTolerance: ptr(6)}, nil},
		{"safetyTolerance 7 for generation", Spec{Prompt: "p", SafetyTolerance: ptr(7)},
			[]want{{"safetyTolerance", "7 is out of range 0..6 for generation"}}},
		{"safetyTolerance negative", Spec{Prompt: "p", SafetyTolerance: ptr(-1)},
			[]want{{"safetyTolerance", "-1 is out of range 0..6 for generation"}}},
		{"safetyTolerance 2 for edits", Spec{Prompt: "p", InputImage: "https://x.test/a.png", SafetyTolerance: ptr(2)}, nil},
		{"safetyTolerance 3 for edits", Spec{Prompt: "p", InputImage: "https://x.test/a.png", SafetyTolerance: ptr(3)},
			[]want{{"safetyTolerance", "3 is out of range 0..2 for edits"}}},

		{"inputImage https", Spec{Prompt: "p", InputImage: "https://example.com/a.png?x=1"}, nil},
		{"inputImage http", Spec{Prompt: "p", InputImage: "http://example.com/a.png"}, nil},
		{"inputImage ftp", Spec{Prompt: "p", InputImage: "ftp://example.com/a.png"}, []want{{"inputImage", "is not an http(s) URL or a local file"}}},
		{"inputImage file URL", Spec{Prompt: "p", InputImage: "file:///tmp/a.png"}, []want{{"inputImage", "is not an http(s) URL or a local file"}}},
		{"inputImage URL without host", Spec{Prompt: "p", InputImage: "https:///a.png"}, []want{{"inputImage", "has no host"}}},
		{"inputImage data URL", Spec{Prompt: "p", InputImage: "data:image/png;base64,AAAA"}, []want{{"inputImage", "data: URLs are not accepted"}}},
		{"inputImage png file", Spec{Prompt: "p", InputImage: pngPath}, nil},
		{"inputImage jpeg file", Spec{Prompt: "p", InputImage: jpegPath}, nil},
		{"inputImage webp file", Spec{Prompt: "p", InputImage: webpPath}, nil},
		{"inputImage gif file", Spec{Prompt: "p", InputImage: gifPath}, []want{{"inputImage", "is not an image (want png, jpeg or webp)"}}},
		{"inputImage text file", Spec{Prompt: "p", InputImage: textPath}, []want{{"inputImage", "is not an image"}}},
		{"inputImage missing file", Spec{Prompt: "p", InputImage: missing}, []want{{"inputImage", "no such file"}}},
		{"inputImage directory", Spec{Prompt: "p", InputImage: dir}, []want{{"inputImage", "is a directory"}}},
		{"inputImage device", Spec{Prompt: "p", InputImage: os.DevNull}, []want{{"inputImage", "is not a regular file"}}},

		{"watermark at the limit", Spec{Prompt: "p", Watermark: strings.Repeat("w", 256)}, nil},
		{"watermark over the limit", Spec{Prompt: "p", Watermark: strings.Repeat("w", 257)}, []want{{"watermark", "is 257 bytes; at most 256 bytes"}}},

		{"id plain", Spec{Prompt: "p", ID: "A.b_c-1"}, nil},
		{"id at the limit", Spec{Prompt: "p", ID: strings.Repeat("i", 128)}, nil},
		{"id over the limit", Spec{Prompt: "p", ID: strings.Repeat("i", 129)}, []want{{"id", "must be 1-128 characters"}}},
		{"id starting with a dot", Spec{Prompt: "p", ID: ".hidden"}, []want{{"id", "must not start with . or -"}}},
		{"id starting with a dash", Spec{Prompt: "p", ID: "-rf"}, []want{{"id", "must not start with . or -"}}},
		{"id with a slash", Spec{Prompt: "p", ID: "a/b"}, []want{{"id", "A-Z a-z 0-9 . _ -"}}},
		{"id with a space", Spec{Prompt: "p", ID: "a b"}, []want{{"id", "A-Z a-z 0-9 . _ -"}}},
		{"id not ASCII", Spec{Prompt: "p", ID: "café"}, []want{{"id", "A-Z a-z 0-9 . _ -"}}},
		{"batch at the limit", Spec{Prompt: "p", Batch: strings.Repeat("b", 64)}, nil},
		{"batch over the limit", Spec{Prompt: "p", Batch: strings.Repeat("b", 65)}, []want{{"batch", "must be 1-64 characters"}}},
		{"batch climbing out", Spec{Prompt: "p", Batch: "../x"}, []want{{"batch", "must be 1-64 characters"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			if len(ve.Problems) != len(tt.want) {
				t.Fatalf("Validate() = %v, want %d problem(s)", err, len(tt.want))
			}
			for i, w := range tt.want {
				p := ve.Problems[i]
				if p.Field != w.field || !strings.Contains(p.Message, w.msg) {
					t.Errorf("problem %d = %q, want field %q and a message containing %q", i, p, w.field, w.msg)
				}
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	s := Spec{Prompt: "p", InputImage: "https://example.com/a.png", AspectRatio: "2:1", SafetyTolerance: ptr(5)}
	err := s.Validate()
	want := `aspectRatio: "2:1" is not one of 21:9, 16:9, 4:3, 1:1, 3:4, 9:16; safetyTolerance: 5 is out of range 0..2 for edits`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v\nwant %s", err, want)
	}
}

func TestValidateImageSizeLimit(t *testing.T) {
	t.Parallel()
	p := writeImage(t, t.TempDir(), "a.png", "png")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{Prompt: "p", InputImage: p}
	if err := s.validate(fi.Size()); err != nil {
		t.Fatalf("an image exactly at the limit: %v", err)
	}
	err = s.validate(fi.Size() - 1)
	if err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("an image over the limit: %v, want an error saying the limit", err)
	}
}

func TestValidateCutsLongValuesInMessages(t *testing.T) {
	t.Parallel()
	s := Spec{Prompt: "p", Model: strings.Repeat("m", 5000)}
	err := s.Validate()
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("Validate() message is %d bytes, want a short one: %.400v", len(err.Error()), err)
	}
}
