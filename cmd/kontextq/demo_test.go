package main

import (
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/eventually"
)

// `kontextq demo` from a clean environment (no key, no Redis, no settings) archives every image
// of the bundled batch, serves a dashboard that answers while it runs, and exits 0 in well
// under a minute.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	dir := t.TempDir()
	began := time.Now()
	p := start(t, dir, nil, "demo", "--listen", "127.0.0.1:0", "--keep-serving")
	url := regexp.MustCompile(`dashboard stays up at (http://[^\s;]+)`)
	var dashboard string
	eventually.True(t, time.Minute, "the demo's batch to finish", func() bool {
		if m := url.FindStringSubmatch(p.out.String()); m != nil {
			dashboard = m[1]
			return true
		}
		select {
		case <-p.done:
			t.Fatalf("the demo exited early:\n%s", p.out.String())
		default:
		}
		return false
	})
	if d := time.Since(began); d > time.Minute {
		t.Errorf("the demo took %s", d)
	}
	// The dashboard's own API, as its page calls it.
	res, err := http.Get(dashboard + "api/queues")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"kontextq:submit"`) {
		t.Errorf("dashboard api/queues: %d %s", res.StatusCode, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, p.out.String())
	}

	want, err := demoFiles.ReadFile("demo/demo.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(want), "\n")
	imgs, _ := filepath.Glob(filepath.Join(dir, "kontextq-demo", "demo-*", "*.*g"))
	if len(imgs) != n {
		t.Fatalf("%d images on disk, want %d:\n%s", len(imgs), n, p.out.String())
	}
	for _, img := range imgs {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		cfg, format, err := image.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width == 0 || !strings.HasSuffix(img, "."+format) {
			t.Errorf("%s is not a %s image: %v", img, filepath.Ext(img), err)
		}
	}
	// The edits are edits of the bundled photo: the light and dark areas of each are where the
	// photo has them.
	f, err := demoFiles.Open("demo/hills.png")
	if err != nil {
		t.Fatal(err)
	}
	photo, _, err := image.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	edits, _ := filepath.Glob(filepath.Join(dir, "kontextq-demo", "demo-*", "hills-*.*g"))
	if len(edits) != 3 {
		t.Fatalf("%d edits of the photo archived, want 3", len(edits))
	}
	for _, path := range edits {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		edit, _, err := image.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if r := likeness(photo, edit); r < 0.9 {
			t.Errorf("%s does not look like an edit of the bundled photo (likeness %.2f)", filepath.Base(path), r)
		}
	}
	if !strings.Contains(p.out.String(), "11 archived, 0 failed of 11") {
		t.Errorf("no summary of the batch in the output:\n%s", p.out.String())
	}
}

// likeness compares the layout of colours in two pictures: b against the middle of a cropped to
// b's shape and posterised to four levels a channel (as the simulator's edits are), over a grid
// of cells, as the correlation of their mean red, green and blue, averaged over the three (1 the
// same layout, about 0 unrelated). Per channel, so that a tint keeps the likeness of an edit.
// The edges and the bottom-right corner are left out, where an edit may carry a mark.
func likeness(a, b image.Image) float64 {
	const n = 8
	ab, bb := a.Bounds(), b.Bounds()
	cw, ch := ab.Dx(), ab.Dx()*bb.Dy()/bb.Dx()
	if ch > ab.Dy() {
		cw, ch = ab.Dy()*bb.Dx()/bb.Dy(), ab.Dy()
	}
	corner := image.Pt(ab.Min.X+(ab.Dx()-cw)/2, ab.Min.Y+(ab.Dy()-ch)/2)
	crop := image.Rectangle{Min: corner, Max: corner.Add(image.Pt(cw, ch))}
	cells := func(img image.Image, r image.Rectangle, levels bool) [3][]float64 {
		var out [3][]float64
		for gy := range n {
			for gx := range n {
				if gx >= n-2 && gy >= n-2 {
					continue
				}
				var sum [3]float64
				cnt := 0.0
				for y := r.Min.Y + gy*r.Dy()/n; y < r.Min.Y+(gy+1)*r.Dy()/n; y++ {
					for x := r.Min.X + gx*r.Dx()/n; x < r.Min.X+(gx+1)*r.Dx()/n; x++ {
						cr, cg, cb, _ := img.At(x, y).RGBA()
						if levels {
							cr, cg, cb = cr>>14, cg>>14, cb>>14
						}
						sum[0], sum[1], sum[2] = sum[0]+float64(cr), sum[1]+float64(cg), sum[2]+float64(cb)
						cnt++
					}
				}
				for c := range 3 {
					out[c] = append(out[c], sum[c]/cnt)
				}
			}
		}
		return out
	}
	inset := func(r image.Rectangle) image.Rectangle { return r.Inset(min(r.Dx(), r.Dy()) / 20) }
	x, y := cells(a, inset(crop), true), cells(b, inset(bb), false)
	total := 0.0
	for c := range 3 {
		total += correlation(x[c], y[c])
	}
	return total / 3
}

func correlation(x, y []float64) float64 {
	mean := func(v []float64) float64 {
		s := 0.0
		for _, f := range v {
			s += f
		}
		return s / float64(len(v))
	}
	mx, my := mean(x), mean(y)
	var sxy, sxx, syy float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
		syy += (y[i] - my) * (y[i] - my)
	}
	if sxx == 0 || syy == 0 {
		return 0
	}
	return sxy / math.Sqrt(sxx*syy)
}
