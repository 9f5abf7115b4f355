package archive_test

import (
	"testing"

	"github.com/kontextq/kontextq/archive"
)

func TestSplitLocation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		loc, batch, root, key string
		ok                    bool
	}{
		{"/srv/archive/kites/j1.png", "kites", "/srv/archive", "kites/j1.png", true},
		{"/srv/kites/archive/kites/000001-red-kite.jpeg", "kites", "/srv/kites/archive", "kites/000001-red-kite.jpeg", true},
		{"s3://bucket/prefix/kites/j1.png", "kites", "s3://bucket/prefix", "kites/j1.png", true},
		{"s3://bucket/kites/j1.png", "kites", "s3://bucket", "kites/j1.png", true},
		{"/srv/archive/other/j1.png", "kites", "", "", false},
		{"kites/j1.png", "kites", "", "", false},
		{"", "kites", "", "", false},
	}
	for _, tc := range cases {
		root, key, ok := archive.SplitLocation(tc.loc, tc.batch)
		if root != tc.root || key != tc.key || ok != tc.ok {
			t.Errorf("SplitLocation(%q, %q) = %q, %q, %v; want %q, %q, %v", tc.loc, tc.batch, root, key, ok, tc.root, tc.key, tc.ok)
		}
	}
}
