package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/internal/eventually"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// chromium finds headless Chromium, skipping the test without it (failing it in CI).
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; CI must run this test (apt-get install -y chromium)")
		}
		t.Skip("chromium is not installed (Debian: apt-get install -y chromium); skipping the browser test")
	}
	return path
}

// artifacts is where a test keeps its screenshots: $KONTEXTQ_TEST_ARTIFACTS, else a temporary
// directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KONTEXTQ_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browse loads url in headless Chromium, saves a screenshot of the window as shot (when not
// empty), and returns the page's DOM after its scripts ran. Each launch gets its own time: on
// a loaded machine one Chromium start can take a minute.
func browse(t *testing.T, chromium, url, shot string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,860", "--virtual-time-budget=10000", "--dump-dom"}
	if shot != "" {
		args = append(args, "--screenshot="+shot)
	}
	cmd := exec.CommandContext(ctx, chromium, append(args, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	if shot != "" {
		f, err := os.Open(shot)
		if err != nil {
			t.Fatalf("no screenshot of %s: %v", url, err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("screenshot %s is not a PNG: %v", shot, err)
		}
		t.Logf("screenshot of %s: %s", url, shot)
	}
	return string(out)
}

// domItems lists the job ids a gallery page's DOM shows, in order.
func domItems(dom string) []string {
	var ids []string
	for _, part := range strings.Split(dom, `data-id="`)[1:] {
		if id := part[:strings.IndexByte(part, '"')]; id != "" { // "" is the static page's item template
			ids = append(ids, id)
		}
	}
	return ids
}

// num is the number in a job id img-NNNN.
func num(id string) int {
	var n int
	fmt.Sscanf(id, "img-%d", &n)
	return n
}

var (
	gallerySubjects = []string{"a lighthouse on a cliff", "a red fox in fresh snow", "a paper boat on a puddle",
		"an old tram in Lisbon", "a bowl of ramen", "a hot air balloon over hills", "a cat asleep on books",
		"a glass greenhouse at night"}
	galleryStyles = []string{"at dusk, oil painting", "watercolour", "in morning fog, photograph", "as a linocut print",
		"in neon light, cinematic"}
)

const hostileGalleryPrompt = `<script>document.title="pwned"</script><img src=x onerror=alert(1)> a fox`

// galleryBatch puts a batch of n jobs into the ledger and the archive as workers would leave
// them: most archived with an image, every seventh failed (refused by Kie), a few queued, one
// with a prompt that is markup.
func galleryBatch(t *testing.T, env *redistest.Env, root, batch string, n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	store, err := archive.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	l := jobs.NewLedger(env.Client, jobs.LedgerOptions{Namespace: env.Prefix + "ns"})
	prompts := map[string]string{}
	specs := make([]*jobs.Spec, n)
	for i := range specs {
		p := gallerySubjects[i%len(gallerySubjects)] + " " + galleryStyles[(i/len(gallerySubjects))%len(galleryStyles)]
		if i == 5 {
			p = hostileGalleryPrompt
		}
		specs[i] = &jobs.Spec{Batch: batch, ID: fmt.Sprintf("img-%04d", i), Prompt: p, OutputFormat: "png"}
		prompts[specs[i].ID] = p
	}
	if _, err := l.CreateMany(ctx, specs, jobs.Bulk); err != nil {
		t.Fatal(err)
	}
	for i, s := range specs {
		r := jobs.Ref{Batch: batch, ID: s.ID}
		switch {
		case i == 5 || i >= n-6:
			// still queued
		case i%7 == 3:
			if ok, err := l.Fail(ctx, r, nil, "", jobs.Rejected, "Kie refused the prompt (code 400): content policy"); err != nil || !ok {
				t.Fatalf("fail %s: %v %v", r, ok, err)
			}
		default:
			data := sceneImage(i)
			sum := sha256.Sum256(data)
			sha := hex.EncodeToString(sum[:])
			key := archive.ImageKey(batch, s.ID, "png")
			if err := store.Put(ctx, key, bytes.NewReader(data), archive.Info{Size: int64(len(data)), SHA256: sha}); err != nil {
				t.Fatal(err)
			}
			task := "task-" + s.ID
			if ok, err := l.RecordSubmitted(ctx, r, task); err != nil || !ok {
				t.Fatalf("submitted %s: %v %v", r, ok, err)
			}
			if ok, err := l.RecordGenerated(ctx, r, task, jobs.Result{ResultURL: "https://example.invalid/r.png", ExpiresAt: time.Now().Add(time.Hour)}); err != nil || !ok {
				t.Fatalf("generated %s: %v %v", r, ok, err)
			}
			if ok, err := l.RecordArchived(ctx, r, jobs.ArchiveRecord{Location: store.Location(key), SHA256: sha, Bytes: int64(len(data)), At: time.Now()}); err != nil || !ok {
				t.Fatalf("archived %s: %v %v", r, ok, err)
			}
		}
	}
	return prompts
}

// sceneImage draws image i: a sky, a sun and hills, in colours of its own.
func sceneImage(i int) []byte {
	const w, h = 384, 288
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	hue := float64(i*47%360) / 360
	sx, sy := float64(60+i*53%260), float64(50+i*29%90)
	for y := range h {
		for x := range w {
			t := float64(y) / h
			c := hsv(hue, 0.45, 0.95-0.35*t)
			if math.Hypot(float64(x)-sx, float64(y)-sy) < 28 {
				c = hsv(math.Mod(hue+0.12, 1), 0.6, 1)
			}
			ridge := 190 + 30*math.Sin(float64(x)/40+float64(i)) + 12*math.Sin(float64(x)/13)
			if float64(y) > ridge {
				c = hsv(math.Mod(hue+0.33, 1), 0.5, 0.45-0.2*t)
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

func hsv(h, s, v float64) color.RGBA {
	i := math.Floor(h * 6)
	f := h*6 - i
	p, q, t := v*(1-s), v*(1-f*s), v*(1-(1-f)*s)
	var r, g, b float64
	switch int(i) % 6 {
	case 0:
		r, g, b = v, t, p
	case 1:
		r, g, b = q, v, p
	case 2:
		r, g, b = p, v, t
	case 3:
		r, g, b = p, q, v
	case 4:
		r, g, b = t, p, v
	default:
		r, g, b = v, p, q
	}
	return color.RGBA{uint8(r * 255), uint8(g * 255), uint8(b * 255), 255}
}

// TestGalleryInChromium opens the gallery kontextq serve serves, and the static page kontextq
// gallery writes, in headless Chromium, for a batch of a few hundred archived images: the
// thumbnails with their prompts, the state filter and the search. Screenshots are kept in
// $KONTEXTQ_TEST_ARTIFACTS.
func TestGalleryInChromium(t *testing.T) {
	browser := chromium(t)
	env := redistest.New(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "archive")
	const batch, n = "postcards", 300
	prompts := galleryBatch(t, env, root, batch, n)
	shots := artifacts(t)

	const token = "gallery-test-token"
	thumbs := filepath.Join(dir, "thumbs")
	addr := freeAddr(t)
	envv := cliEnv(env, "KIE_API_KEY=sim-key", "KONTEXTQ_API_TOKEN="+token, "KONTEXTQ_ARCHIVE="+root)
	p := start(t, dir, envv, "serve", "--listen", addr, "--thumb-cache", thumbs)
	eventually.True(t, 30*time.Second, "kontextq serve to be ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The browser gives the token as the basic-auth password, from the address.
	base := "http://viewer:" + token + "@" + addr + "/gallery/"

	list := browse(t, browser, base, filepath.Join(shots, "gallery-batches.png"))
	if !strings.Contains(list, `href="postcards/"`) || !strings.Contains(list, fmt.Sprintf(`<td class="n">%d</td>`, n)) {
		t.Errorf("the batch list does not show the batch of %d:\n%.2000s", n, list)
	}

	page := browse(t, browser, base+batch+"/", filepath.Join(shots, "gallery-batch.png"))
	ids := domItems(page)
	if len(ids) != 100 || ids[0] != "img-0000" {
		t.Fatalf("the batch page shows %d images (%v…), want the first 100", len(ids), ids[:min(3, len(ids))])
	}
	for _, id := range []string{"img-0000", "img-0001", "img-0042"} {
		if !strings.Contains(page, prompts[id]) {
			t.Errorf("the page does not show %s's prompt %q", id, prompts[id])
		}
	}
	if strings.Contains(page, "<script>document") || strings.Contains(page, "<img src=\"x\"") || strings.Contains(page, "pwned</title>") {
		t.Error("a prompt was taken for markup")
	}
	if !strings.Contains(page, "&lt;script&gt;document.title=") {
		t.Error("the prompt with markup is not shown as text")
	}
	// The browser fetched the thumbnails it showed, which serve made and kept.
	var made int
	filepath.WalkDir(thumbs, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".jpg") {
			made++
		}
		return nil
	})
	if made < 10 {
		t.Errorf("serve made %d thumbnails for the page in the browser, want those on screen", made)
	}

	failed := browse(t, browser, base+batch+"/?state=failed", filepath.Join(shots, "gallery-failed.png"))
	fids := domItems(failed)
	wantFailed := 0
	for i := range n {
		if i%7 == 3 && i != 5 && i < n-6 {
			wantFailed++
		}
	}
	if len(fids) != wantFailed {
		t.Errorf("state=failed shows %d images, want %d", len(fids), wantFailed)
	}
	for _, id := range fids {
		if num(id)%7 != 3 {
			t.Errorf("state=failed shows %s, which has not failed", id)
		}
	}
	if !strings.Contains(failed, "content policy") {
		t.Error("the failed images do not show why they failed")
	}

	search := browse(t, browser, base+batch+"/?q=LIGHTHOUSE", filepath.Join(shots, "gallery-search.png"))
	sids := domItems(search)
	if len(sids) == 0 {
		t.Fatal("q=LIGHTHOUSE shows nothing")
	}
	for _, id := range sids {
		if !strings.Contains(prompts[id], "lighthouse") {
			t.Errorf("q=LIGHTHOUSE shows %s: %q", id, prompts[id])
		}
	}
	if p.cmd.ProcessState != nil {
		t.Fatalf("kontextq serve exited early: %s", p.out.String())
	}

	// The same page, static, written into the batch's folder of the archive.
	code, out := kq(t, dir, cliEnv(env, "KONTEXTQ_ARCHIVE="+root), "gallery", batch)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("gallery of batch %s: %d jobs", batch, n)) {
		t.Fatalf("kontextq gallery = %d:\n%s", code, out)
	}
	index := filepath.Join(root, batch, "index.html")
	static := browse(t, browser, "file://"+index, filepath.Join(shots, "gallery-static.png"))
	if got := domItems(static); len(got) != 100 || got[0] != "img-0000" {
		t.Errorf("the static page shows %d images, want the first 100", len(got))
	}
	if !strings.Contains(static, prompts["img-0001"]) || !strings.Contains(static, "thumbs/") {
		t.Error("the static page does not show the thumbnails with their prompts")
	}
	sfailed := browse(t, browser, "file://"+index+"?state=failed&q=fox", "")
	for _, id := range domItems(sfailed) {
		if num(id)%7 != 3 || !strings.Contains(prompts[id], "fox") {
			t.Errorf("the static page's state=failed&q=fox shows %s: %q", id, prompts[id])
		}
	}
	if len(domItems(sfailed)) == 0 {
		t.Error("the static page's state=failed&q=fox shows nothing")
	}
	if strings.Contains(static, "<script>document") {
		t.Error("the static page took a prompt for markup")
	}
}
