// Package archivetest holds what every archive.Store must do, as one conformance suite, and
// a store that fails on demand for tests of code that depends on one.
//
// The suite checks the archive's promise from the outside, the way the worker and a user
// browsing the archive would see it: an object is either absent, the previous version, or
// complete and verified, whatever happens to the Put that writes it.
package archivetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
)

const (
	// big is larger than one 5 MiB S3 part, so a store that uploads in parts has sent some
	// of them when a Put is paused or broken at pauseAt.
	big     = 7 << 20
	pauseAt = 6 << 20
	// streamSize is the object that must pass without being buffered. A store may hold a few
	// upload parts meanwhile (S3 parts are at least 5 MiB, and the SDK fills one while
	// sending another), never the object or a growing share of it.
	streamSize      = 64 << 20
	streamPeakLimit = streamSize / 2
	streamRiseLimit = streamSize / 16
	opTimeout       = 2 * time.Minute
)

// Run checks that the stores open makes keep the archive.Store contract. open must return a
// new, empty store for each call (a fresh directory, a fresh prefix) and arrange its Close
// with t.Cleanup. Call Run from a test that is not parallel: one subtest measures the
// process's heap while a 64 MiB object streams through the store.
func Run(t *testing.T, open func(t *testing.T) archive.Store) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("NothingVisibleBeforePutReturns", func(t *testing.T) { testNothingVisibleEarly(t, open) })
	t.Run("CorruptStreamPublishesNothing", func(t *testing.T) { testCorrupt(t, open) })
	t.Run("FailingReaderPublishesNothing", func(t *testing.T) { testFailingReader(t, open) })
	t.Run("CancelPublishesNothing", func(t *testing.T) { testCancel(t, open) })
	t.Run("UndeclaredChecksumRefused", func(t *testing.T) { testUndeclared(t, open(t)) })
	t.Run("OverwriteReplaces", func(t *testing.T) { testOverwrite(t, open(t)) })
	t.Run("ConcurrentPutsSameKey", func(t *testing.T) { testConcurrentPuts(t, open(t)) })
	t.Run("StreamsWithoutBuffering", func(t *testing.T) {
		if testing.Short() {
			t.Skip("streams a 64 MiB object")
		}
		testStreaming(t, open(t))
	})
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("DeleteIdempotent", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("InvalidKeysRejected", func(t *testing.T) { testInvalidKeys(t, open(t)) })
	t.Run("SidecarRoundTrip", func(t *testing.T) { testSidecar(t, open(t)) })
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// payload is n reproducible pseudo-random bytes: image-like in that nothing compresses or
// repeats, so a store cannot pass by accident.
func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seedBytes(seed)).Read(b)
	return b
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func infoOf(b []byte, contentType string) archive.Info {
	return archive.Info{Size: int64(len(b)), SHA256: sum(b), ContentType: contentType}
}

func mustPut(t *testing.T, s archive.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(ctxFor(t), key, bytes.NewReader(b), infoOf(b, "")); err != nil {
		t.Fatalf("Put %s (%d bytes): %v", key, len(b), err)
	}
}

// wantContent checks that key holds exactly b, through Stat, Open and List.
func wantContent(t *testing.T, s archive.Store, key string, b []byte) {
	t.Helper()
	ctx := ctxFor(t)
	info, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat %s: %v", key, err)
	}
	if info.Size != int64(len(b)) {
		t.Errorf("Stat %s: size %d, want %d", key, info.Size, len(b))
	}
	if info.SHA256 != "" && info.SHA256 != sum(b) {
		t.Errorf("Stat %s: sha256 %s, want %s", key, info.SHA256, sum(b))
	}
	rc, err := s.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if !bytes.Equal(got, b) {
		t.Errorf("Open %s: got %d bytes (sha256 %s), want %d bytes (sha256 %s)", key, len(got), sum(got), len(b), sum(b))
	}
	if keys := listKeys(t, s, key); !slices.Contains(keys, key) {
		t.Errorf("List(%q) = %q, want it to contain %s", key, keys, key)
	}
}

// wantMissing checks that key holds nothing, through Stat, Open and List.
func wantMissing(t *testing.T, s archive.Store, key string) {
	t.Helper()
	ctx := ctxFor(t)
	if info, err := s.Stat(ctx, key); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("Stat %s = %+v, %v; want ErrNotFound", key, info, err)
	}
	if rc, err := s.Open(ctx, key); !errors.Is(err, archive.ErrNotFound) {
		if err == nil {
			_ = rc.Close()
		}
		t.Errorf("Open %s: err %v, want ErrNotFound", key, err)
	}
	if keys := listKeys(t, s, key); len(keys) != 0 {
		t.Errorf("List(%q) = %q, want nothing", key, keys)
	}
}

// wantPrevious checks that key is in the state it had before a failed Put: prev's content,
// or nothing when prev is nil.
func wantPrevious(t *testing.T, s archive.Store, key string, prev []byte) {
	t.Helper()
	if prev == nil {
		wantMissing(t, s, key)
	} else {
		wantContent(t, s, key, prev)
	}
}

func listKeys(t *testing.T, s archive.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(ctxFor(t), prefix, func(key string, _ archive.Info) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	slices.Sort(keys)
	return keys
}

func testRoundTrip(t *testing.T, s archive.Store) {
	cases := []struct {
		key         string
		data        []byte
		contentType string
	}{
		{"b1/img.png", payload(1, 100<<10), "image/png"},
		{"b1/photo.jpeg", payload(2, 3<<10), "image/jpeg"},
		{"b1/empty.json", []byte{}, "application/json"},
		{"b1/deep/er/big.png", payload(3, big), "image/png"},
	}
	before := time.Now()
	for _, c := range cases {
		if err := s.Put(ctxFor(t), c.key, bytes.NewReader(c.data), infoOf(c.data, c.contentType)); err != nil {
			t.Fatalf("Put %s: %v", c.key, err)
		}
	}
	after := time.Now()
	for _, c := range cases {
		wantContent(t, s, c.key, c.data)
		info, err := s.Stat(ctxFor(t), c.key)
		if err != nil {
			t.Fatalf("Stat %s: %v", c.key, err)
		}
		if info.ContentType != c.contentType {
			t.Errorf("Stat %s: content type %q, want %q", c.key, info.ContentType, c.contentType)
		}
		// Stores round times (S3 to the second); a second's slack either way is still
		// "written by this Put".
		if info.ModTime.Before(before.Add(-2*time.Second)) || info.ModTime.After(after.Add(2*time.Second)) {
			t.Errorf("Stat %s: mod time %v, want between %v and %v", c.key, info.ModTime, before, after)
		}
		if loc := s.Location(c.key); !strings.HasSuffix(loc, c.key) {
			t.Errorf("Location(%s) = %q, want it to end in the key", c.key, loc)
		}
	}
}

// gate is a reader that stops at pauseAt until released, so a test can look at the store
// while a Put is half done, or break the Put there.
type gate struct {
	r       *bytes.Reader
	pos     int
	at      int
	paused  chan struct{} // closed when the reader reaches at
	resume  chan struct{} // closed by the test to let it go on
	failErr error         // if set, returned at the pause instead of waiting
	once    sync.Once
	release sync.Once
}

func newGate(t *testing.T, b []byte, at int) *gate {
	g := &gate{r: bytes.NewReader(b), at: at, paused: make(chan struct{}), resume: make(chan struct{})}
	t.Cleanup(g.Release) // never leave a Put blocked behind a failed test
	return g
}

func (g *gate) Release() { g.release.Do(func() { close(g.resume) }) }

func (g *gate) Read(p []byte) (int, error) {
	if g.pos == g.at {
		g.once.Do(func() { close(g.paused) })
		if g.failErr != nil {
			return 0, g.failErr
		}
		<-g.resume
	}
	if g.pos < g.at && g.pos+len(p) > g.at {
		p = p[:g.at-g.pos]
	}
	n, err := g.r.Read(p)
	g.pos += n
	return n, err
}

// waitPaused waits until the Put has read up to the gate, failing the test if the Put
// returned first.
func waitPaused(t *testing.T, g *gate, putErr <-chan error) {
	t.Helper()
	select {
	case <-g.paused:
	case err := <-putErr:
		t.Fatalf("Put returned %v before reading its whole stream", err)
	case <-time.After(opTimeout):
		t.Fatal("Put never reached the middle of its stream")
	}
}

// withAndWithoutPrevious runs fn twice: on an empty key, and on a key that already holds a
// complete object prev (seeded by seed), which anything short of a successful Put must leave
// intact.
func withAndWithoutPrevious(t *testing.T, name string, open func(t *testing.T) archive.Store, key string, seed uint64,
	fn func(t *testing.T, s archive.Store, prev []byte)) {
	for _, withPrev := range []bool{false, true} {
		t.Run(fmt.Sprintf("%sprevious=%v", name, withPrev), func(t *testing.T) {
			s := open(t)
			var prev []byte
			if withPrev {
				prev = payload(seed, 5<<10)
				mustPut(t, s, key, prev)
			}
			fn(t, s, prev)
		})
	}
}

func testNothingVisibleEarly(t *testing.T, open func(t *testing.T) archive.Store) {
	const key = "b1/slow.png"
	withAndWithoutPrevious(t, "", open, key, 10, func(t *testing.T, s archive.Store, prev []byte) {
		next := payload(11, big)
		g := newGate(t, next, pauseAt)
		ctx := ctxFor(t)
		putErr := make(chan error, 1)
		go func() { putErr <- s.Put(ctx, key, g, infoOf(next, "")) }()
		waitPaused(t, g, putErr)

		wantPrevious(t, s, key, prev)
		var complete []string
		if prev != nil {
			complete = []string{key}
		}
		if keys := listKeys(t, s, ""); !slices.Equal(keys, complete) {
			t.Errorf("List during a Put = %q, want %q: only complete objects", keys, complete)
		}

		g.Release()
		if err := <-putErr; err != nil {
			t.Fatalf("Put: %v", err)
		}
		wantContent(t, s, key, next)
		if keys := listKeys(t, s, ""); !slices.Equal(keys, []string{key}) {
			t.Errorf("List after the Put = %q, want [%s]", keys, key)
		}
	})
}

func testCorrupt(t *testing.T, open func(t *testing.T) archive.Store) {
	type spoil func(archive.Info) archive.Info
	spoils := []struct {
		name  string
		spoil spoil
	}{
		{"size too large", func(i archive.Info) archive.Info { i.Size++; return i }},
		{"size too small", func(i archive.Info) archive.Info { i.Size--; return i }},
		{"sha256 differs", func(i archive.Info) archive.Info {
			flip := "0"
			if i.SHA256[0] == '0' {
				flip = "1"
			}
			i.SHA256 = flip + i.SHA256[1:]
			return i
		}},
		{"sha256 of other content", func(i archive.Info) archive.Info { i.SHA256 = sum([]byte("other")); return i }},
	}
	sizes := []struct {
		name string
		n    int
	}{{"small", 4 << 10}, {"multipart", big}}
	for _, sp := range spoils {
		for _, sz := range sizes {
			const key = "b1/c.png"
			withAndWithoutPrevious(t, sp.name+"/"+sz.name+"/", open, key, 20, func(t *testing.T, s archive.Store, prev []byte) {
				data := payload(21, sz.n)
				err := s.Put(ctxFor(t), key, bytes.NewReader(data), sp.spoil(infoOf(data, "")))
				if !errors.Is(err, archive.ErrCorrupt) {
					t.Errorf("Put with %s: err %v, want ErrCorrupt", sp.name, err)
				}
				wantPrevious(t, s, key, prev)
			})
		}
	}
}

var errSource = errors.New("source broke")

func testFailingReader(t *testing.T, open func(t *testing.T) archive.Store) {
	const key = "b1/f.png"
	withAndWithoutPrevious(t, "", open, key, 30, func(t *testing.T, s archive.Store, prev []byte) {
		data := payload(31, big)
		g := newGate(t, data, pauseAt)
		g.failErr = errSource
		err := s.Put(ctxFor(t), key, g, infoOf(data, ""))
		if !errors.Is(err, errSource) {
			t.Errorf("Put from a reader that fails midway: err %v, want it to wrap the reader's error", err)
		}
		wantPrevious(t, s, key, prev)
	})
}

func testCancel(t *testing.T, open func(t *testing.T) archive.Store) {
	const key = "b1/x.png"
	withAndWithoutPrevious(t, "midway/", open, key, 40, func(t *testing.T, s archive.Store, prev []byte) {
		data := payload(41, big)
		g := newGate(t, data, pauseAt)
		ctx, cancel := context.WithCancel(ctxFor(t))
		putErr := make(chan error, 1)
		go func() { putErr <- s.Put(ctx, key, g, infoOf(data, "")) }()
		waitPaused(t, g, putErr)
		cancel()
		g.Release() // the source goes on: the store must notice the context itself
		if err := <-putErr; !errors.Is(err, context.Canceled) {
			t.Errorf("Put cancelled midway: err %v, want context.Canceled", err)
		}
		wantPrevious(t, s, key, prev)
	})
	t.Run("before", func(t *testing.T) {
		s := open(t)
		ctx, cancel := context.WithCancel(ctxFor(t))
		cancel()
		data := payload(42, 1<<10)
		if err := s.Put(ctx, "b1/y.png", bytes.NewReader(data), infoOf(data, "")); err == nil {
			t.Error("Put with a cancelled context succeeded")
		}
		wantMissing(t, s, "b1/y.png")
	})
}

func testUndeclared(t *testing.T, s archive.Store) {
	data := payload(50, 1<<10)
	cases := []struct {
		name string
		want archive.Info
	}{
		{"no sha256", archive.Info{Size: int64(len(data))}},
		{"sha256 not hex", archive.Info{Size: int64(len(data)), SHA256: strings.Repeat("z", 64)}},
		{"sha256 too short", archive.Info{Size: int64(len(data)), SHA256: sum(data)[:40]}},
		{"negative size", archive.Info{Size: -1, SHA256: sum(data)}},
	}
	for _, c := range cases {
		if err := s.Put(ctxFor(t), "b1/u.png", bytes.NewReader(data), c.want); err == nil {
			t.Errorf("Put with %s succeeded; a store must not publish what it cannot verify", c.name)
		}
	}
	wantMissing(t, s, "b1/u.png")
	// Upper-case hex is still the right checksum.
	want := infoOf(data, "")
	want.SHA256 = strings.ToUpper(want.SHA256)
	if err := s.Put(ctxFor(t), "b1/u.png", bytes.NewReader(data), want); err != nil {
		t.Errorf("Put with upper-case sha256: %v", err)
	}
}

func testOverwrite(t *testing.T, s archive.Store) {
	const key = "b1/o.png"
	a, b := payload(60, 300<<10), payload(61, 2<<10)
	mustPut(t, s, key, a)
	mustPut(t, s, key, b)
	wantContent(t, s, key, b)
	c := payload(62, big)
	mustPut(t, s, key, c)
	wantContent(t, s, key, c)
	if keys := listKeys(t, s, ""); !slices.Equal(keys, []string{key}) {
		t.Errorf("List after overwrites = %q, want [%s]", keys, key)
	}
}

func testConcurrentPuts(t *testing.T, s archive.Store) {
	const key = "b1/same.png"
	const writers = 6
	versions := make([][]byte, writers)
	for i := range versions {
		versions[i] = payload(uint64(70+i), (40+i*13)<<10)
	}
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i, v := range versions {
		wg.Go(func() { errs[i] = s.Put(ctx, key, bytes.NewReader(v), infoOf(v, "")) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put #%d: %v", i, err)
		}
	}
	rc, err := s.Open(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	winner := slices.IndexFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) })
	if winner < 0 {
		t.Fatalf("after concurrent Puts the object (%d bytes) is none of the versions written", len(got))
	}
	wantContent(t, s, key, versions[winner])
	if keys := listKeys(t, s, ""); !slices.Equal(keys, []string{key}) {
		t.Errorf("List after concurrent Puts = %q, want [%s]", keys, key)
	}
}

// streamReader produces the streamSize test object without holding it, and measures the
// live heap after every MiB it hands out. Whatever the store keeps of what it has read is
// live at that moment; garbage is not, so forcing a GC before each sample measures what the
// store holds rather than how much it allocates.
type streamReader struct {
	src     io.Reader
	read    int
	samples []int64 // live heap growth after each MiB read
	base    uint64
}

func newStream() io.Reader {
	return io.LimitReader(rand.NewChaCha8(seedBytes(80)), streamSize)
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func (r *streamReader) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	before := r.read
	r.read += n
	if r.read>>20 > before>>20 {
		r.samples = append(r.samples, int64(liveHeap())-int64(r.base))
	}
	return n, err
}

func testStreaming(t *testing.T, s archive.Store) {
	h := sha256.New()
	if _, err := io.Copy(h, newStream()); err != nil {
		t.Fatal(err)
	}
	want := archive.Info{Size: streamSize, SHA256: hex.EncodeToString(h.Sum(nil)), ContentType: "image/png"}
	const key = "b1/huge.png"

	src := &streamReader{src: newStream(), base: liveHeap()}
	if err := s.Put(ctxFor(t), key, src, want); err != nil {
		t.Fatalf("Put of a %d MiB stream: %v", streamSize>>20, err)
	}
	if len(src.samples) < streamSize>>20 {
		t.Fatalf("the store read %d MiB of a %d MiB stream", len(src.samples), streamSize>>20)
	}
	// Two views of one property. The peak must stay well below the object: a store may hold
	// a few upload parts, not the object. And the heap must stay flat while the second half
	// streams through: a store keeping any fixed share of what it reads grows there.
	quarter, half := src.samples[len(src.samples)/4], src.samples[len(src.samples)/2:]
	peak := slices.Max(src.samples)
	rise := slices.Max(half) - quarter
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	t.Logf("storing %d MiB: live heap peaked %s above the start, rose %s over the second half",
		streamSize>>20, mib(peak), mib(rise))
	if peak > streamPeakLimit {
		t.Errorf("live heap grew by %s while storing a %d MiB object (limit %s): the store buffers the stream",
			mib(peak), streamSize>>20, mib(streamPeakLimit))
	}
	if rise > streamRiseLimit {
		t.Errorf("live heap rose by %s while the second half of a %d MiB object streamed through (limit %s): "+
			"the store holds on to what it has read", mib(rise), streamSize>>20, mib(streamRiseLimit))
	}

	info, err := s.Stat(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Size != streamSize {
		t.Errorf("Stat: size %d, want %d", info.Size, streamSize)
	}
	rc, err := s.Open(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	h.Reset()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		t.Errorf("read back sha256 %s, want %s", got, want.SHA256)
	}
	if err := s.Delete(ctxFor(t), key); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

var errStop = errors.New("stop listing")

func testList(t *testing.T, s archive.Store) {
	keys := []string{"b1/a.png", "b1/b.json", "b1/sub/c.png", "b10/d.png", "b2/e.jpeg"}
	sizes := map[string]int{}
	for i, k := range keys {
		data := payload(uint64(90+i), (i+1)*1000)
		sizes[k] = len(data)
		mustPut(t, s, k, data)
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", keys},
		{"b1/", []string{"b1/a.png", "b1/b.json", "b1/sub/c.png"}},
		{"b1", []string{"b1/a.png", "b1/b.json", "b1/sub/c.png", "b10/d.png"}},
		{"b1/a", []string{"b1/a.png"}},
		{"b1/sub/", []string{"b1/sub/c.png"}},
		{"b3/", nil},
		{"b2/e.jpeg", []string{"b2/e.jpeg"}},
	}
	for _, c := range cases {
		if got := listKeys(t, s, c.prefix); !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, got, c.want)
		}
	}
	err := s.List(ctxFor(t), "", func(key string, info archive.Info) error {
		if info.Size != int64(sizes[key]) {
			t.Errorf("List: %s has size %d, want %d", key, info.Size, sizes[key])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	calls := 0
	err = s.List(ctxFor(t), "", func(string, archive.Info) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("List with a callback failing at once: err %v after %d calls, want errStop after 1", err, calls)
	}
}

func testDelete(t *testing.T, s archive.Store) {
	ctx := ctxFor(t)
	const key = "b1/d.png"
	if err := s.Delete(ctx, key); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	mustPut(t, s, key, payload(100, 1<<10))
	other := payload(101, 1<<10)
	mustPut(t, s, "b1/keep.png", other)
	for i := range 2 {
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("Delete #%d: %v", i+1, err)
		}
	}
	wantMissing(t, s, key)
	wantContent(t, s, "b1/keep.png", other)
}

func testInvalidKeys(t *testing.T, s archive.Store) {
	ctx := ctxFor(t)
	data := payload(110, 100)
	keys := []string{
		"", "/abs.png", "b1//x.png", "b1/../x.png", "..", "../x.png", "b1/./x.png", "b1/",
		"b1/x\x00.png", "b1/x\n.png", ".hidden.png", "b1/.kontextq-123.tmp",
		"b1/" + strings.Repeat("x", 256), "b1/\xff.png",
	}
	for _, key := range keys {
		if err := s.Put(ctx, key, bytes.NewReader(data), infoOf(data, "")); !errors.Is(err, archive.ErrInvalidKey) {
			t.Errorf("Put(%q): err %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, archive.ErrInvalidKey) {
			t.Errorf("Stat(%q): err %v, want ErrInvalidKey", key, err)
		}
		if rc, err := s.Open(ctx, key); !errors.Is(err, archive.ErrInvalidKey) {
			if err == nil {
				_ = rc.Close()
			}
			t.Errorf("Open(%q): err %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, archive.ErrInvalidKey) {
			t.Errorf("Delete(%q): err %v, want ErrInvalidKey", key, err)
		}
	}
	if got := listKeys(t, s, ""); len(got) != 0 {
		t.Errorf("after Puts with invalid keys the store lists %q", got)
	}
	long := "b1/" + strings.Repeat("y", 255)
	mustPut(t, s, long, data)
	wantContent(t, s, long, data)
}

func testSidecar(t *testing.T, s archive.Store) {
	ctx := ctxFor(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sc := archive.Sidecar{
		ID: "job-1", Batch: "b1", TaskID: "task-abc",
		Request:   json.RawMessage(`{"prompt":"a red fox","outputFormat":"png"}`),
		SourceURL: "https://tempfile.example/r.png", SHA256: sum([]byte("image")), Bytes: 5, Format: "png",
		CreateTime: at, CompleteTime: at.Add(20 * time.Second), ArchivedAt: at.Add(21 * time.Second),
		ExpiresAt: at.Add(14 * 24 * time.Hour), OriginURL: "https://tempfile.example/o.png", Attempts: 2,
	}
	if _, err := archive.ReadSidecar(ctx, s, "b1", "job-1"); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("ReadSidecar before PutSidecar: err %v, want ErrNotFound", err)
	}
	if err := archive.PutSidecar(ctx, s, sc); err != nil {
		t.Fatalf("PutSidecar: %v", err)
	}
	got, err := archive.ReadSidecar(ctx, s, "b1", "job-1")
	if err != nil {
		t.Fatalf("ReadSidecar: %v", err)
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(sc)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("sidecar round trip:\n got %s\nwant %s", gotJSON, wantJSON)
	}
	info, err := s.Stat(ctx, archive.SidecarKey("b1", "job-1"))
	if err != nil {
		t.Fatalf("Stat sidecar: %v", err)
	}
	if info.ContentType != "application/json" {
		t.Errorf("sidecar content type %q, want application/json", info.ContentType)
	}
}
