package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/gallery"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
	"github.com/kontextq/kontextq/server"
)

// noChecker is the Checker of a server whose callbacks are not under test.
type noChecker struct{}

func (noChecker) Check(context.Context, jobs.Ref) error { return nil }

// galleryFixture is a server with a batch in its ledger and images in its archive.
type galleryFixture struct {
	url    string
	ledger *jobs.Ledger
	store  archive.Store
	thumbs string // the thumbnail cache directory
	root   string // the archive directory
	secret string // a file beside the archive no address may reach
	images map[string][]byte
}

const hostilePrompt = `a cat <script>document.title="pwned"</script> & "friends"`

// gallerySetup loads batch "cats" of n jobs into a fresh namespace: every fifth failed
// (rejected), job 3 queued with the prompt hostilePrompt, the rest archived with a real PNG.
func gallerySetup(t testing.TB, n int, opts ...func(*server.Options)) *galleryFixture {
	t.Helper()
	env := redistest.New(t)
	ns := env.Prefix + "ns"
	dir := t.TempDir()
	root := filepath.Join(dir, "archive")
	store, err := archive.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("TOP-SECRET-CONTENT"), 0o600); err != nil {
		t.Fatal(err)
	}
	thumbs, err := gallery.NewThumbs(filepath.Join(dir, "thumbs"), 2)
	if err != nil {
		t.Fatal(err)
	}
	enq := jobs.NewEnqueuer(env.Client, jobs.EnqueuerOptions{Namespace: ns})
	t.Cleanup(func() { enq.Close() })
	f := &galleryFixture{ledger: enq.Ledger(), store: store, thumbs: thumbs.Dir(), root: root, secret: secret, images: map[string][]byte{}}
	ctx := context.Background()
	specs := make([]*jobs.Spec, n)
	for i := range specs {
		p := fmt.Sprintf("a tabby cat number %d on a windowsill", i)
		if i%2 == 1 {
			p = fmt.Sprintf("a black cat number %d in the snow", i)
		}
		if i == 3 {
			p = hostilePrompt
		}
		specs[i] = &jobs.Spec{Batch: "cats", ID: fmt.Sprintf("cat-%04d", i), Prompt: p, OutputFormat: "png"}
	}
	if _, err := f.ledger.CreateMany(ctx, specs, jobs.Bulk); err != nil {
		t.Fatal(err)
	}
	for i, s := range specs {
		r := jobs.Ref{Batch: s.Batch, ID: s.ID}
		switch {
		case i == 3:
		case i%5 == 0:
			if ok, err := f.ledger.Fail(ctx, r, nil, "", jobs.Rejected, "content policy: the prompt was refused"); err != nil || !ok {
				t.Fatalf("fail %s: %v %v", r, ok, err)
			}
		default:
			f.images[s.ID] = archiveImage(t, f.ledger, store, r, i)
		}
	}
	o := server.Options{Redis: env.Client, Namespace: ns, Enqueuer: enq, Checker: noChecker{}, APIToken: testToken,
		Loopback: true, Archive: store, Thumbs: thumbs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, fn := range opts {
		fn(&o)
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// archiveImage puts a small PNG for job i into the store and records the job archived, as a
// worker would.
func archiveImage(t testing.TB, l *jobs.Ledger, store archive.Store, r jobs.Ref, i int) []byte {
	t.Helper()
	ctx := context.Background()
	img := image.NewRGBA(image.Rect(0, 0, 96, 64))
	c := color.RGBA{uint8(40 + i*37%200), uint8(60 + i*91%180), uint8(90 + i*53%160), 255}
	for y := range 64 {
		for x := range 96 {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	sha := hex.EncodeToString(sum[:])
	key := archive.ImageKey(r.Batch, r.ID, "png")
	if err := store.Put(ctx, key, bytes.NewReader(buf.Bytes()), archive.Info{Size: int64(buf.Len()), SHA256: sha}); err != nil {
		t.Fatal(err)
	}
	task := "task-" + r.ID
	if ok, err := l.RecordSubmitted(ctx, r, task); err != nil || !ok {
		t.Fatalf("submitted %s: %v %v", r, ok, err)
	}
	if ok, err := l.RecordGenerated(ctx, r, task, jobs.Result{ResultURL: "https://example.invalid/x.png", ExpiresAt: time.Now().Add(time.Hour)}); err != nil || !ok {
		t.Fatalf("generated %s: %v %v", r, ok, err)
	}
	if ok, err := l.RecordArchived(ctx, r, jobs.ArchiveRecord{Location: store.Location(key), SHA256: sha, Bytes: int64(buf.Len()), At: time.Now()}); err != nil || !ok {
		t.Fatalf("archived %s: %v %v", r, ok, err)
	}
	return buf.Bytes()
}

// get fetches a path with the token as a browser sends it (basic auth).
func (f *galleryFixture) get(t *testing.T, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", f.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("me", testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (f *galleryFixture) page(t *testing.T, path string) string {
	t.Helper()
	code, h, b := f.get(t, path)
	if code != 200 {
		t.Fatalf("GET %s = %d: %s", path, code, b)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "script-src") {
		t.Errorf("GET %s: no Content-Security-Policy", path)
	}
	return string(b)
}

// shown lists the job ids a page shows, in order.
func shown(page string) []string {
	var ids []string
	for _, part := range strings.Split(page, `data-id="`)[1:] {
		ids = append(ids, part[:strings.IndexByte(part, '"')])
	}
	return ids
}

func TestGalleryListsBatchesAndShowsTheirImages(t *testing.T) {
	f := gallerySetup(t, 40)
	list := f.page(t, "/gallery/")
	for _, want := range []string{`href="cats/"`, `<td class="n">40</td>`, `<td class="n">31</td>`, `<td class="n">8</td>`} {
		if !strings.Contains(list, want) {
			t.Errorf("the batch list lacks %s:\n%s", want, list)
		}
	}

	p := f.page(t, "/gallery/cats/")
	if got := shown(p); len(got) != 40 || got[0] != "cat-0000" || got[39] != "cat-0039" {
		t.Fatalf("the batch page shows %v, want cat-0000 … cat-0039 in load order", got)
	}
	for _, want := range []string{"a tabby cat number 2 on a windowsill", "content policy: the prompt was refused", `src="thumb/cat-0001"`, `href="image/cat-0001"`} {
		if !strings.Contains(p, want) {
			t.Errorf("the batch page lacks %q", want)
		}
	}
	// The prompt is shown, as text.
	if strings.Contains(p, "<script>document") {
		t.Error("the hostile prompt reached the page as markup")
	}
	if !strings.Contains(p, "a cat &lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt; &amp; &#34;friends&#34;") {
		t.Error("the hostile prompt is not shown escaped")
	}

	failed := f.page(t, "/gallery/cats/?state=failed")
	if got := shown(failed); len(got) != 8 || got[0] != "cat-0000" || got[1] != "cat-0005" {
		t.Errorf("state=failed shows %v, want the 8 failed jobs", got)
	}
	search := f.page(t, "/gallery/cats/?q=BLACK+cat+number+1")
	if got := shown(search); strings.Join(got, ",") != "cat-0001,cat-0011,cat-0013,cat-0015,cat-0017,cat-0019" {
		t.Errorf("q=BLACK cat number 1 shows %v", got)
	}
	both := f.page(t, "/gallery/cats/?state=failed&q=black")
	if got := shown(both); strings.Join(got, ",") != "cat-0005,cat-0015,cat-0025,cat-0035" {
		t.Errorf("state=failed&q=black shows %v", got)
	}
	hostile := f.page(t, "/gallery/cats/?q=%3Cscript%3E")
	if got := shown(hostile); len(got) != 1 || got[0] != "cat-0003" {
		t.Errorf("q=<script> shows %v, want cat-0003", got)
	}
	if strings.Contains(hostile, "<script>") {
		t.Error("the search for <script> reached the page as markup")
	}
	if code, _, _ := f.get(t, "/gallery/cats/?state=lost"); code != 400 {
		t.Errorf("state=lost = %d, want 400", code)
	}

	// The original comes from the archive as it is; the thumbnail is a small JPEG, made once.
	code, h, b := f.get(t, "/gallery/cats/image/cat-0001")
	if code != 200 || !bytes.Equal(b, f.images["cat-0001"]) || h.Get("Content-Type") != "image/png" {
		t.Fatalf("image = %d %s, %d bytes; want the archived PNG", code, h.Get("Content-Type"), len(b))
	}
	for range 2 {
		code, h, b = f.get(t, "/gallery/cats/thumb/cat-0001")
		if code != 200 || h.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("thumb = %d %s: %s", code, h.Get("Content-Type"), b)
		}
		if _, err := jpeg.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("thumb is not a JPEG: %v", err)
		}
	}
	var cached []string
	filepath.WalkDir(f.thumbs, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			cached = append(cached, p)
		}
		return nil
	})
	if len(cached) != 1 {
		t.Errorf("thumbnail cache holds %v, want the one thumbnail", cached)
	}
	if code, _, _ := f.get(t, "/gallery/cats/thumb/cat-0000"); code != 404 {
		t.Errorf("thumb of a failed job = %d, want 404", code)
	}
}

func TestGalleryPagesThroughALargeBatch(t *testing.T) {
	f := gallerySetup(t, 230)
	p1 := f.page(t, "/gallery/cats/")
	if got := shown(p1); len(got) != 100 || got[99] != "cat-0099" {
		t.Fatalf("page 1 shows %d jobs, last %v", len(got), got[len(got)-1:])
	}
	if !strings.Contains(p1, `href="?from=100"`) || !strings.Contains(p1, "page 1 of 3") {
		t.Errorf("page 1 does not link page 2")
	}
	p3 := f.page(t, "/gallery/cats/?from=200")
	if got := shown(p3); len(got) != 30 || got[0] != "cat-0200" {
		t.Errorf("page 3 shows %v", got)
	}
	if !strings.Contains(p3, `href="?from=100"`) || !strings.Contains(p3, "page 3 of 3") {
		t.Errorf("page 3 does not link back to page 2")
	}
	// A filtered page goes on from where it stopped.
	f1 := f.page(t, "/gallery/cats/?state=failed")
	if got := shown(f1); len(got) != 46 {
		t.Errorf("failed shows %d jobs, want 46", len(got))
	}
}

func TestGalleryWantsTheToken(t *testing.T) {
	// Loopback or not, the gallery shows prompts and images only to the token holder.
	f := gallerySetup(t, 3)
	for _, path := range []string{"/gallery/", "/gallery/cats/", "/gallery/cats/thumb/cat-0001", "/gallery/cats/image/cat-0001"} {
		resp, err := http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("GET %s without the token = %d (%q), want 401 asking for basic auth", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		req, _ := http.NewRequest("GET", f.url+path, nil)
		req.SetBasicAuth("me", "wrong")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET %s with a wrong token = %d, want 401", path, resp.StatusCode)
		}
		req, _ = http.NewRequest("GET", f.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s with the bearer token = %d, want 200", path, resp.StatusCode)
		}
	}
}

func TestGalleryAddressesCannotLeaveTheArchive(t *testing.T) {
	f := gallerySetup(t, 3)
	ctx := context.Background()
	// Ledger records that point elsewhere: a file beside the archive, another batch's image.
	for id, loc := range map[string]string{"evil-1": f.secret, "evil-2": f.store.Location("dogs/cat-0002.png")} {
		r := jobs.Ref{Batch: "cats", ID: id}
		if _, err := f.ledger.CreateMany(ctx, []*jobs.Spec{{Batch: "cats", ID: id, Prompt: "x"}}, jobs.Bulk); err != nil {
			t.Fatal(err)
		}
		if ok, err := f.ledger.RecordSubmitted(ctx, r, "t-"+id); err != nil || !ok {
			t.Fatalf("%s: %v %v", id, ok, err)
		}
		if ok, err := f.ledger.RecordGenerated(ctx, r, "t-"+id, jobs.Result{ResultURL: "https://example.invalid/x"}); err != nil || !ok {
			t.Fatalf("%s: %v %v", id, ok, err)
		}
		if ok, err := f.ledger.RecordArchived(ctx, r, jobs.ArchiveRecord{Location: loc, SHA256: strings.Repeat("ab", 32), Bytes: 18}); err != nil || !ok {
			t.Fatalf("%s: %v %v", id, ok, err)
		}
	}
	for _, p := range []string{filepath.Join(f.root, "dogs.png"), filepath.Join(f.root, "dogs", "cat-0002.png")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("TOP-SECRET-CONTENT"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	abs := strings.TrimPrefix(f.secret, "/")
	long := strings.Repeat("a", 70_000)
	paths := []string{
		"/gallery/../../secret.txt",
		"/gallery/%2e%2e/",
		"/gallery/%2e%2e/image/secret.txt",
		"/gallery/..%2F..%2Fsecret.txt/",
		"/gallery/..%2f/image/secret",
		"/gallery/%2F" + abs + "/",
		"/gallery/cats%2F..%2F..%2F/",
		"/gallery/cats%00/",
		"/gallery/cats/image/..%2F..%2Fsecret.txt",
		"/gallery/cats/image/%2e%2e",
		"/gallery/cats/image/%2F" + strings.ReplaceAll(abs, "/", "%2F"),
		"/gallery/cats/thumb/..%2F..%2Fsecret.txt",
		"/gallery/cats/image/cat-0001%00.png",
		"/gallery/cats/image/evil-1", // its record points outside the archive
		"/gallery/cats/thumb/evil-1",
		"/gallery/cats/thumb/evil-2",
		"/gallery/cats/image/evil-2",      // its record points into another batch
		"/gallery/../archive/dogs.png",    //
		"/gallery/" + long + "/",          // longer than any name
		"/gallery/cats/image/" + long,     //
		"/gallery/cats/?q=" + long[:2000], // a search longer than any prompt
	}
	for _, p := range paths {
		code, _, b := f.get(t, p)
		name := p
		if len(name) > 80 {
			name = name[:80] + "…"
		}
		if code == 200 {
			t.Errorf("GET %s = 200, want it refused", name)
		}
		if bytes.Contains(b, []byte("TOP-SECRET")) {
			t.Errorf("GET %s reached a file outside the archive", name)
		}
	}
}

func TestGalleryShowsSpendAtTheConfiguredPrices(t *testing.T) {
	f := gallerySetup(t, 10, func(o *server.Options) {
		o.Prices = map[string]float64{"flux-kontext-pro": 4.5}
		o.Rate = ratelimit.Rate{Events: 20, Per: 10 * time.Second}
	})
	list := f.page(t, "/gallery/")
	// 7 archived jobs, one generate call each, at 4.5 credits; one job still queued.
	if !strings.Contains(list, "31.5 credits") || !strings.Contains(list, "1 queued") || !strings.Contains(list, "at --rate 20/10s") {
		t.Errorf("the batch list does not show the spend and the ETA:\n%s", list)
	}
	p := f.page(t, "/gallery/cats/")
	if !strings.Contains(p, "spend 31.5 credits") {
		t.Error("the batch page does not show the spend")
	}
	g := gallerySetup(t, 3)
	if list := g.page(t, "/gallery/"); strings.Contains(list, "credits</td>") {
		t.Error("spend shown without prices")
	}
}

// A job the budget holds shows why, on the batch page and in the batch list, with the spend
// against the cap.
func TestGalleryShowsJobsHeldByTheBudget(t *testing.T) {
	f := gallerySetup(t, 10)
	ctx := context.Background()
	zero := jobs.CreditsOf(0)
	if err := f.ledger.SetMaxCredits(ctx, "cats", &zero); err != nil {
		t.Fatal(err)
	}
	res, err := f.ledger.Reserve(ctx, jobs.Ref{Batch: "cats", ID: "cat-0003"}, jobs.ReserveRequest{Model: jobs.DefaultModel, Price: jobs.CreditsOf(5), PriceKnown: true})
	if err != nil || res.Outcome != jobs.Held {
		t.Fatalf("reserve under a cap of 0: %+v, %v; want held", res, err)
	}
	list := f.page(t, "/gallery/")
	if !strings.Contains(list, `title="budget: batch cap 0 credits reached">1</td>`) || !strings.Contains(list, "0 of 0 credits") {
		t.Errorf("the batch list does not show the held job and the spend against the cap:\n%s", list)
	}
	p := f.page(t, "/gallery/cats/?state=queued")
	if !strings.Contains(p, "1 held: budget: batch cap 0 credits reached") || !strings.Contains(p, "held: budget: batch cap 0 credits reached</p>") {
		t.Errorf("the batch page does not show why the job is held:\n%s", p)
	}
}
