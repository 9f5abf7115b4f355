package jobs

import (
	"regexp"
	"testing"
)

// These ids are stored in ledgers and are the names of archived files: if this test fails,
// every job already loaded would be loaded (and paid for) again. Change them only together
// with idVersion, on purpose.
func TestDeriveIDGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		spec       Spec
		occurrence int
		want       string
	}{
		{"minimal", Spec{Prompt: "A serene mountain landscape at sunset"}, 1, "j5rsu6g2gf3o4g6fz34ufq74b"},
		{"second occurrence", Spec{Prompt: "A serene mountain landscape at sunset"}, 2, "jnhnikmgazv3v66pusufzu4po"},
		{"every field", Spec{Batch: "b1", Prompt: "make it snow", InputImage: "https://example.com/in.png",
			AspectRatio: "1:1", Model: "flux-kontext-max", OutputFormat: "png", PromptUpsampling: ptr(true),
			SafetyTolerance: ptr(1), EnableTranslation: ptr(false), Watermark: "wm", UploadCn: ptr(true)}, 1, "jjrudzonusqkhyvoep646j4lm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DeriveID(&tt.spec, tt.occurrence); got != tt.want {
				t.Errorf("DeriveID() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeriveIDExplicitWins(t *testing.T) {
	t.Parallel()
	s := Spec{ID: "mine", Prompt: "p"}
	if got := DeriveID(&s, 7); got != "mine" {
		t.Fatalf("DeriveID() = %q, want the explicit id", got)
	}
}

var derivedID = regexp.MustCompile(`^j[a-z2-7]{24}$`)

func TestDeriveIDIsASafeName(t *testing.T) {
	t.Parallel()
	for _, s := range []Spec{{Prompt: "p"}, {Prompt: "../../etc/passwd", Batch: "x"}, {Prompt: "\x00"}} {
		id := DeriveID(&s, 1)
		if !derivedID.MatchString(id) || checkName(id, MaxIDLen) != "" {
			t.Errorf("DeriveID(%+v) = %q, not a safe file name", s, id)
		}
	}
}

// Kie applies its defaults to fields a request leaves out, so leaving a field out and
// giving its default ask for the same image and must derive the same id; anything else
// that changes the request must change the id.
func TestDeriveIDSameRequestSameID(t *testing.T) {
	t.Parallel()
	base := func() Spec { return Spec{Batch: "b", Prompt: "a cat"} }
	edit := func() Spec { return Spec{Batch: "b", Prompt: "a cat", InputImage: "https://example.com/a.png"} }
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	tests := []struct {
		name string
		a, b Spec
		same bool
	}{
		{"model default", base(), with(base(), func(s *Spec) { s.Model = "flux-kontext-pro" }), true},
		{"model other", base(), with(base(), func(s *Spec) { s.Model = "flux-kontext-max" }), false},
		{"outputFormat default", base(), with(base(), func(s *Spec) { s.OutputFormat = "jpeg" }), true},
		{"outputFormat other", base(), with(base(), func(s *Spec) { s.OutputFormat = "png" }), false},
		{"aspectRatio default for generation", base(), with(base(), func(s *Spec) { s.AspectRatio = "16:9" }), true},
		{"aspectRatio omitted keeps an edit's ratio", edit(), with(edit(), func(s *Spec) { s.AspectRatio = "16:9" }), false},
		{"aspectRatio other", base(), with(base(), func(s *Spec) { s.AspectRatio = "1:1" }), false},
		{"safetyTolerance default", base(), with(base(), func(s *Spec) { s.SafetyTolerance = ptr(2) }), true},
		{"safetyTolerance other", base(), with(base(), func(s *Spec) { s.SafetyTolerance = ptr(0) }), false},
		{"enableTranslation default", base(), with(base(), func(s *Spec) { s.EnableTranslation = ptr(true) }), true},
		{"enableTranslation other", base(), with(base(), func(s *Spec) { s.EnableTranslation = ptr(false) }), false},
		{"promptUpsampling default", base(), with(base(), func(s *Spec) { s.PromptUpsampling = ptr(false) }), true},
		{"promptUpsampling other", base(), with(base(), func(s *Spec) { s.PromptUpsampling = ptr(true) }), false},
		{"uploadCn default", base(), with(base(), func(s *Spec) { s.UploadCn = ptr(false) }), true},
		{"uploadCn other", base(), with(base(), func(s *Spec) { s.UploadCn = ptr(true) }), false},
		{"batch", base(), with(base(), func(s *Spec) { s.Batch = "c" }), false},
		{"no batch", base(), with(base(), func(s *Spec) { s.Batch = "" }), false},
		{"prompt", base(), with(base(), func(s *Spec) { s.Prompt = "a dog" }), false},
		{"prompt white space", base(), with(base(), func(s *Spec) { s.Prompt = "a cat " }), false},
		{"inputImage", base(), with(base(), func(s *Spec) { s.InputImage = "/tmp/a.png" }), false},
		{"watermark", base(), with(base(), func(s *Spec) { s.Watermark = "w" }), false},
		// Length prefixes keep field boundaries: moving text between fields is a new request.
		{"text moved between fields", with(base(), func(s *Spec) { s.Prompt = "ab"; s.Watermark = "c" }),
			with(base(), func(s *Spec) { s.Prompt = "a"; s.Watermark = "bc" }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := DeriveID(&tt.a, 1), DeriveID(&tt.b, 1)
			if (a == b) != tt.same {
				t.Errorf("ids %s and %s: same = %v, want %v", a, b, a == b, tt.same)
			}
			if (contentKey(&tt.a) == contentKey(&tt.b)) != tt.same {
				t.Errorf("content keys: same = %v, want %v", !tt.same, tt.same)
			}
		})
	}
}

func TestDeriveIDOccurrence(t *testing.T) {
	t.Parallel()
	s := Spec{Prompt: "p"}
	one, two := DeriveID(&s, 1), DeriveID(&s, 2)
	if one == two {
		t.Fatal("occurrences 1 and 2 derive the same id: two identical lines would be one image")
	}
	if DeriveID(&s, 0) != one || DeriveID(&s, -3) != one {
		t.Fatal("occurrence below 1 is not taken as 1")
	}
}
