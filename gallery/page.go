package gallery

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/kontextq/kontextq/jobs"
)

//go:embed assets
var assets embed.FS

var (
	pages   = template.Must(template.ParseFS(assets, "assets/gallery.html"))
	css     = mustRead("assets/gallery.css")
	script  = mustRead("assets/gallery.js")
	cspBase = "default-src 'none'; base-uri 'none'; form-action 'self'; style-src '" + hash(css) + "'; script-src '" + hash(script) + "'"
)

func mustRead(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(h[:])
}

// CSP is the Content-Security-Policy of the served pages: their own stylesheet and (static
// pages only) script, images from the same server, nothing else. Whatever a prompt holds, no
// script it could smuggle in would run.
func CSP() string { return cspBase + "; img-src 'self'; frame-ancestors 'none'" }

// staticCSP is the policy a static page sets for itself: its images are files beside it.
func staticCSP() string { return cspBase + "; img-src 'self' file: data:" }

// StateTab is one state filter as the page offers it.
type StateTab struct {
	Value    string // "" for every state
	Label    string
	Count    int64
	Href     string
	Selected bool
}

// PageView is a batch page.
type PageView struct {
	Summary
	Filter  Filter
	States  []StateTab
	Items   []Item
	PerPage int
	// Status says what the page shows; Where where it is in the batch.
	Status, Where string
	// First, Prev and Next are the addresses of other pages ("" when there is none).
	First, Prev, Next string
	// Generated is when a static page was written.
	Generated time.Time
	// Data is every item, for a static page's script; Blank the empty item it copies.
	Data  []Item
	Blank Item
}

// pageHref is the address of a page of the batch, relative to the batch page.
func pageHref(f Filter, from int64) string {
	v := url.Values{}
	if f.State != "" {
		v.Set("state", string(f.State))
	}
	if f.Query != "" {
		v.Set("q", f.Query)
	}
	if from > 0 {
		v.Set("from", strconv.FormatInt(from, 10))
	}
	if len(v) == 0 {
		return "./"
	}
	return "?" + v.Encode()
}

func (g *Gallery) tabs(s Summary, f Filter) []StateTab {
	counts := map[jobs.State]int64{jobs.Queued: s.Queued, jobs.Submitted: s.Submitted, jobs.Generated: s.Generated,
		jobs.Archived: s.Archived, jobs.Failed: s.Failed}
	out := []StateTab{{Label: "all", Count: s.Total, Href: pageHref(Filter{Query: f.Query}, 0), Selected: f.State == ""}}
	for _, st := range []jobs.State{jobs.Archived, jobs.Failed, jobs.Queued, jobs.Submitted, jobs.Generated} {
		out = append(out, StateTab{Value: string(st), Label: string(st), Count: counts[st],
			Href: pageHref(Filter{State: st, Query: f.Query}, 0), Selected: f.State == st})
	}
	return out
}

// ServedLinks are the image addresses of a served batch page (…/gallery/BATCH/).
func ServedLinks(j *jobs.Job) (thumb, image string) {
	id := url.PathEscape(j.ID)
	return "thumb/" + id, "image/" + id
}

// Page builds a served batch page: the images of s's batch matching f from position from on.
func (g *Gallery) Page(ctx context.Context, s Summary, f Filter, from int64) (*PageView, error) {
	per := g.o.PerPage
	p, err := g.o.Ledger.Page(ctx, s.Batch, jobs.PageQuery{From: from, Limit: per, State: f.State, Search: f.Query})
	if err != nil {
		return nil, err
	}
	v := &PageView{Summary: s, Filter: f, States: g.tabs(s, f), PerPage: per}
	for _, j := range p.Jobs {
		v.Items = append(v.Items, g.item(j, ServedLinks))
	}
	if p.Next >= 0 {
		v.Next = pageHref(f, p.Next)
	}
	if from > 0 {
		v.First = pageHref(f, 0)
		// A filtered page cannot know where the previous one began; the first page is the way back.
		v.Prev = v.First
		if f.State == "" && f.Query == "" {
			v.Prev = pageHref(f, max(0, from-int64(per)))
		}
	}
	filtered := f.State != "" || f.Query != ""
	end := from + p.Scanned
	switch {
	case !filtered && p.Len > 0:
		v.Where = fmt.Sprintf("page %d of %d", from/int64(per)+1, (p.Len+int64(per)-1)/int64(per))
		v.Status = fmt.Sprintf("%d–%d of %d images", min(from+1, p.Len), min(end, p.Len), p.Len)
	case filtered:
		what := "images"
		if f.State != "" {
			what = string(f.State) + " images"
		}
		v.Status = fmt.Sprintf("%d %s", len(v.Items), what)
		if f.Query != "" {
			v.Status += fmt.Sprintf(" matching “%s”", f.Query)
		}
		v.Status += fmt.Sprintf(" among positions %d–%d of %d", min(from+1, p.Len), min(end, p.Len), p.Len)
		if p.Next >= 0 {
			v.Status += "; next looks further"
		}
	}
	if len(v.Items) == 0 && p.Next < 0 {
		v.Status += ". Nothing to show."
	}
	return v, nil
}

// doc is what the templates get.
type doc struct {
	Title  string
	CSS    template.CSS
	JS     template.JS
	CSP    string
	Static bool
	List   []Summary
	Page   *PageView
}

// RenderList writes the batch list.
func RenderList(w io.Writer, list []Summary) error {
	return pages.ExecuteTemplate(w, "list", doc{Title: "batches", CSS: template.CSS(css), List: list})
}

// RenderPage writes a served batch page.
func RenderPage(w io.Writer, p *PageView) error {
	return pages.ExecuteTemplate(w, "page", doc{Title: "batch " + p.Batch, CSS: template.CSS(css), Page: p})
}

// renderStatic writes a static batch page.
func renderStatic(w io.Writer, p *PageView) error {
	return pages.ExecuteTemplate(w, "page", doc{Title: "batch " + p.Batch, CSS: template.CSS(css), JS: template.JS(script),
		CSP: staticCSP(), Static: true, Page: p})
}
