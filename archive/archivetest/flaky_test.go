package archivetest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/archive/archivetest"
)

func TestFlaky(t *testing.T) {
	local, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &archivetest.Flaky{Store: local}
	ctx := t.Context()
	data := []byte("image")
	h := sha256.Sum256(data)
	want := archive.Info{Size: int64(len(data)), SHA256: hex.EncodeToString(h[:])}
	if err := f.Put(ctx, "b1/a.png", bytes.NewReader(data), want); err != nil {
		t.Fatalf("Put while up: %v", err)
	}

	errDown := errors.New("disk gone")
	f.SetDown(errDown)
	calls := map[string]error{
		"Put":    f.Put(ctx, "b1/b.png", bytes.NewReader(data), want),
		"Delete": f.Delete(ctx, "b1/a.png"),
		"List":   f.List(ctx, "", func(string, archive.Info) error { return nil }),
	}
	_, calls["Stat"] = f.Stat(ctx, "b1/a.png")
	_, calls["Open"] = f.Open(ctx, "b1/a.png")
	for name, err := range calls {
		if !errors.Is(err, errDown) {
			t.Errorf("%s while down: err %v, want the SetDown error", name, err)
		}
	}
	if _, err := local.Stat(ctx, "b1/b.png"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("a Put while down reached the store: %v", err)
	}

	f.SetDown(nil)
	if _, err := f.Stat(ctx, "b1/a.png"); err != nil {
		t.Errorf("Stat after recovery: %v (the Delete while down must not have happened)", err)
	}
	if err := f.Put(ctx, "b1/b.png", bytes.NewReader(data), want); err != nil {
		t.Errorf("Put after recovery: %v", err)
	}
}
