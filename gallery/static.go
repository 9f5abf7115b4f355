package gallery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kontextq/kontextq/jobs"
)

// StaticOptions say where a static gallery goes. Its files are index.html and
// thumbs/<sha256 of the image>.jpg, named relative to one folder.
type StaticOptions struct {
	// Write publishes a file of the gallery whole; required.
	Write func(ctx context.Context, name string, data []byte) error
	// Exists reports whether a file of the gallery is already there, so that thumbnails are
	// made once; required.
	Exists func(ctx context.Context, name string) bool
	// ImageHref is the address of an archived image, by its archive key, relative to
	// index.html; "" links no original. Nil links none.
	ImageHref func(key string) string
	// Parallel is how many thumbnails are made at once (1).
	Parallel int
	// Progress, when set, is told of each thumbnail done.
	Progress func(done, total int)
}

// StaticReport says what WriteStatic did.
type StaticReport struct {
	Jobs       int // items on the page
	Thumbnails int // archived images shown with a thumbnail
	Made       int // thumbnails made now (the others were there already)
	// Failed lists the images whose thumbnail could not be made; they are shown without one.
	Failed []string
}

// WriteStatic writes a batch's page as a static index.html with a thumbnail of every archived
// image. The page carries every job and shows them a page at a time with the same filters as a
// served page, in the browser.
func (g *Gallery) WriteStatic(ctx context.Context, batch string, o StaticOptions) (StaticReport, error) {
	var rep StaticReport
	s, err := g.Summary(ctx, batch)
	if err != nil {
		return rep, err
	}
	type thumbJob struct {
		key, sha, name string
		item           int
	}
	var items []Item
	var todo []thumbJob
	err = g.o.Ledger.Each(ctx, batch, func(j *jobs.Job) error {
		var tj thumbJob
		it := g.item(j, func(j *jobs.Job) (string, string) {
			key, _ := ImageKey(g.o.Store, j)
			name, err := Name(j.SHA256)
			if err != nil {
				return "", ""
			}
			tj = thumbJob{key: key, sha: j.SHA256, name: "thumbs/" + name, item: len(items)}
			image := ""
			if o.ImageHref != nil {
				image = o.ImageHref(key)
			}
			return tj.name, image
		})
		if tj.name != "" {
			todo = append(todo, tj)
		}
		items = append(items, it)
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Jobs, rep.Thumbnails = len(items), len(todo)

	var (
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
	)
	work := make(chan thumbJob)
	for range max(1, o.Parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tj := range work {
				made, err := g.staticThumb(ctx, o, tj.key, tj.name)
				mu.Lock()
				done++
				if made {
					rep.Made++
				}
				if err != nil {
					rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", tj.key, err))
					items[tj.item].Thumb = ""
					items[tj.item].Missing = "no thumbnail"
				}
				if o.Progress != nil {
					o.Progress(done, len(todo))
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, tj := range todo {
		select {
		case work <- tj:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}

	f := Filter{}
	v := &PageView{Summary: s, Filter: f, States: g.tabs(s, f), PerPage: g.o.PerPage, Generated: g.o.Now(), Data: items}
	v.Items = items[:min(len(items), g.o.PerPage)]
	if len(items) > g.o.PerPage {
		v.Next = pageHref(f, int64(g.o.PerPage))
	}
	v.Status = fmt.Sprintf("%d images", len(items))
	var buf bytes.Buffer
	if err := renderStatic(&buf, v); err != nil {
		return rep, err
	}
	return rep, o.Write(ctx, "index.html", buf.Bytes())
}

// staticThumb makes one thumbnail of a static gallery unless it is there already.
func (g *Gallery) staticThumb(ctx context.Context, o StaticOptions, key, name string) (made bool, err error) {
	if o.Exists(ctx, name) {
		return false, nil
	}
	rc, err := g.o.Store.Open(ctx, key)
	if err != nil {
		return false, err
	}
	data, err := Thumbnail(rc)
	err = errors.Join(err, rc.Close())
	if err != nil {
		return false, err
	}
	return true, o.Write(ctx, name, data)
}
