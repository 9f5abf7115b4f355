package archive_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/archive"
)

func TestValidKey(t *testing.T) {
	cases := []struct {
		key string
		ok  bool
	}{
		{"b1/job.png", true},
		{"b1/job.json", true},
		{"batch 7/ünïcode-id.jpeg", true},
		{"a/b/c/d.png", true},
		{"x.png", true},
		{"b1/" + strings.Repeat("y", 255), true},
		{"b1/a..b.png", true}, // dots inside a name are fine
		{"", false},
		{"/abs/x.png", false},
		{"b1/", false},
		{"b1//x.png", false},
		{"..", false},
		{"../x.png", false},
		{"b1/../x.png", false},
		{"b1/./x.png", false},
		{".", false},
		{".hidden", false},
		{"b1/.kontextq-1.tmp", false},
		{"b1/x\x00.png", false},
		{"b1/x\t.png", false},
		{"b1/x\u0085.png", false}, // a C1 control character
		{"b1/\xff.png", false},
		{"b1/" + strings.Repeat("y", 256), false},
	}
	for _, c := range cases {
		err := archive.ValidKey(c.key)
		if c.ok && err != nil {
			t.Errorf("ValidKey(%q) = %v, want nil", c.key, err)
		}
		if !c.ok && !errors.Is(err, archive.ErrInvalidKey) {
			t.Errorf("ValidKey(%q) = %v, want ErrInvalidKey", c.key, err)
		}
	}
}

func TestKeys(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{archive.ImageKey("b1", "job-1", "png"), "b1/job-1.png"},
		{archive.ImageKey("b1", "job-1", "jpeg"), "b1/job-1.jpeg"},
		{archive.ImageKey("b1", "job-1", "PNG"), "b1/job-1.png"},
		{archive.SidecarKey("b1", "job-1"), "b1/job-1.json"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
		if err := archive.ValidKey(c.got); err != nil {
			t.Errorf("%q is not a valid key: %v", c.got, err)
		}
	}
}

func TestOpenLocalLocations(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	cases := []struct {
		location string
		dir      string
	}{
		{"./rel", filepath.Join(base, "rel")},
		{"plain", filepath.Join(base, "plain")},
		{filepath.Join(base, "abs"), filepath.Join(base, "abs")},
		{"file://" + filepath.Join(base, "url"), filepath.Join(base, "url")},
		{"file://localhost" + filepath.Join(base, "host"), filepath.Join(base, "host")},
	}
	for _, c := range cases {
		s, err := archive.Open(t.Context(), c.location)
		if err != nil {
			t.Errorf("Open(%q): %v", c.location, err)
			continue
		}
		if got, want := s.Location("b/x.png"), filepath.Join(c.dir, "b", "x.png"); got != want {
			t.Errorf("Open(%q).Location = %q, want %q", c.location, got, want)
		}
		_ = s.Close()
	}
}

func TestOpenRejects(t *testing.T) {
	for _, location := range []string{
		"",
		"gs://bucket/prefix",
		"https://example.com/archive",
		"file://otherhost/dir",
		"s3:///no-bucket",
		"s3://bucket/../escape",
	} {
		if s, err := archive.Open(t.Context(), location); err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded, want an error", location)
		}
	}
}
