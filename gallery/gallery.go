// Package gallery shows batches to a person: a list of batches with their progress, and for
// each batch a page of thumbnails with every image's prompt, state and failure reason, filtered
// by state and searched by prompt. kontextq serve serves it a page at a time (server package);
// kontextq gallery writes the same page once as a static index.html beside its thumbnails, for
// people who never run a server.
//
// Everything shown comes from the ledger; images come from the archive through archive.Store,
// located by the key the ledger recorded for each job, never by a name taken from an address.
// Thumbnails are made once and kept (Thumbs). Pages are html/template, and the little script the
// static page needs fills its items in with textContent, so a prompt is shown as text wherever
// it appears.
package gallery

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kontextq/kontextq/archive"
	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/ratelimit"
)

// Options configure a Gallery. Zero values take the defaults named.
type Options struct {
	// Ledger holds the batches; required.
	Ledger *jobs.Ledger
	// Store is the archive the images are read from; nil shows no images.
	Store archive.Store
	// Thumbs is where thumbnails are kept; nil shows no thumbnails.
	Thumbs *Thumbs
	// Prices are the credits one image of a model costs (the --price setting); without a price
	// for every model a batch used, its spend is not shown.
	Prices map[string]float64
	// Rate is the account's generate rate (--rate), for each unfinished batch's ETA; zero
	// shows none.
	Rate ratelimit.Rate
	// PerPage is how many images a page shows (100).
	PerPage int
	Now     func() time.Time // time.Now
}

// Gallery builds the views of batches.
type Gallery struct {
	o     Options
	spent sync.Map // batch → spendEntry
}

// New returns a Gallery.
func New(o Options) *Gallery {
	if o.PerPage <= 0 {
		o.PerPage = 100
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Gallery{o: o}
}

// Summary is a batch as the batch list shows it.
type Summary struct {
	Batch string
	jobs.BatchInfo
	// Percent is the share of jobs that have ended (archived or failed), 0-100.
	Percent int
	// ETA is how long the batch has left ("" when finished or unknown).
	ETA string
	// Spend is the credits spent, "" when the prices are not known.
	Spend string
	// Cap is the batch's credit cap, "" when it has none; HeldReason says why the budget holds
	// its Held jobs ("" when it holds none).
	Cap        string
	HeldReason string
}

// Ended is the number of jobs archived or failed.
func (s Summary) Ended() int64 { return s.Archived + s.Failed }

// Working is the number of jobs at Kie or being archived.
func (s Summary) Working() int64 { return s.Submitted + s.Generated }

// ErrNoBatch is returned for a batch the ledger does not hold.
var ErrNoBatch = errors.New("no such batch")

// Summary reads one batch's summary; ErrNoBatch if the ledger does not hold it.
func (g *Gallery) Summary(ctx context.Context, batch string) (Summary, error) {
	if jobs.CheckName(batch) != "" {
		return Summary{}, ErrNoBatch
	}
	waiting, err := g.waiting(ctx)
	if err != nil {
		return Summary{}, err
	}
	return g.summary(ctx, batch, waiting)
}

// waiting reads the batches with jobs in line, whose turns an ETA counts (none without a rate:
// no ETA is shown).
func (g *Gallery) waiting(ctx context.Context) ([]jobs.WaitingBatch, error) {
	if g.o.Rate.PerSecond() <= 0 {
		return nil, nil
	}
	return g.o.Ledger.Waiting(ctx)
}

// summary reads one batch's summary, given the batches waiting.
func (g *Gallery) summary(ctx context.Context, batch string, waiting []jobs.WaitingBatch) (Summary, error) {
	info, err := g.o.Ledger.Info(ctx, batch)
	if err != nil {
		return Summary{}, err
	}
	if info.Total == 0 {
		return Summary{}, ErrNoBatch
	}
	s := Summary{Batch: batch, BatchInfo: info}
	if info.Total > 0 {
		s.Percent = int(math.Floor(100 * float64(s.Ended()) / float64(info.Total)))
	}
	if !info.Done() && g.o.Rate.PerSecond() > 0 {
		sh, _ := jobs.ShareOf(waiting, batch)
		s.ETA = jobs.EstimateETA(info.Counts, sh, g.o.Rate).String()
	}
	b, err := g.o.Ledger.Budget(ctx, batch)
	if err != nil {
		return s, err
	}
	if b.HasCap {
		s.Cap = b.Cap.String()
	}
	s.HeldReason = b.HeldReason()
	if b.Unpriced == 0 && (b.Spent > 0 || b.HasCap) {
		// The ledger charged every submission of the batch at a known price.
		s.Spend = b.Spent.String()
		return s, nil
	}
	s.Spend, err = g.spend(ctx, batch, info.Counts)
	return s, err
}

// Summaries lists every batch of the ledger, newest first.
func (g *Gallery) Summaries(ctx context.Context) ([]Summary, error) {
	names, err := g.o.Ledger.Batches(ctx)
	if err != nil {
		return nil, err
	}
	waiting, err := g.waiting(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(names))
	for _, b := range names {
		if jobs.CheckName(b) != "" {
			continue
		}
		s, err := g.summary(ctx, b, waiting)
		if errors.Is(err, ErrNoBatch) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Batch, b.Batch)
	})
	return out, nil
}

type spendEntry struct {
	counts jobs.Counts
	at     time.Time
	spend  string
}

// spendFresh is how long a working batch's spend is reused: counting it reads every job.
const spendFresh = 30 * time.Second

// spend is what a batch has cost at the configured prices: its paid generate calls by model,
// each at its price. It is "" without a price for every model the batch paid for.
func (g *Gallery) spend(ctx context.Context, batch string, c jobs.Counts) (string, error) {
	if len(g.o.Prices) == 0 {
		return "", nil
	}
	now := g.o.Now()
	if v, ok := g.spent.Load(batch); ok {
		e := v.(spendEntry)
		if e.counts == c && (c.Done() || now.Sub(e.at) < spendFresh) {
			return e.spend, nil
		}
	}
	paid, err := g.o.Ledger.Paid(ctx, batch)
	if err != nil {
		return "", err
	}
	var credits float64
	s := ""
	known := true
	for m, n := range paid {
		p, ok := g.o.Prices[m]
		if !ok {
			known = false
			break
		}
		credits += p * float64(n)
	}
	if known {
		s = strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", credits), "0"), ".")
	}
	g.spent.Store(batch, spendEntry{counts: c, at: now, spend: s})
	return s, nil
}

// Filter selects the images a page shows.
type Filter struct {
	State jobs.State // "" for every state
	Query string     // searched in prompts and ids, ignoring case
}

// ParseState reads a state filter: "" or one of jobs.States.
func ParseState(s string) (jobs.State, error) {
	if s == "" || s == "all" {
		return "", nil
	}
	if slices.Contains(jobs.States, jobs.State(s)) {
		return jobs.State(s), nil
	}
	return "", fmt.Errorf("state %q: want one of all, queued, submitted, generated, archived, failed", s)
}

// Item is one job as a page shows it.
type Item struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Prompt string `json:"prompt"`
	// Reason and Error say why a job failed (or, for one still queued, its last error, or
	// "held" and why the budget holds it).
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Thumb and Image are the addresses of the thumbnail and the original, "" when there is
	// no image to show.
	Thumb string `json:"thumb,omitempty"`
	Image string `json:"image,omitempty"`
	// Missing says why an archived job shows no image.
	Missing string `json:"missing,omitempty"`
}

// ErrNoImage is returned by ImageKey for a job without an archived image in the store.
var ErrNoImage = errors.New("no archived image")

// ImageKey is the key of a job's archived image in store, taken from the location the ledger
// recorded. A location outside store, or outside the job's batch in it, gives ErrNoImage: an
// image is only ever read from where the batch was archived.
func ImageKey(store archive.Store, j *jobs.Job) (string, error) {
	if j.State != jobs.Archived || j.Location == "" || store == nil {
		return "", ErrNoImage
	}
	root := store.Location("")
	rest, ok := strings.CutPrefix(j.Location, root)
	if !ok {
		return "", fmt.Errorf("%w: %s is outside the archive %s", ErrNoImage, j.Location, root)
	}
	key := strings.TrimPrefix(rest, "/")
	if archive.ValidKey(key) != nil || !strings.HasPrefix(key, j.Batch+"/") || store.Location(key) != j.Location {
		return "", fmt.Errorf("%w: %s is not an image of batch %s in the archive %s", ErrNoImage, j.Location, j.Batch, root)
	}
	return key, nil
}

// item makes the view of a job; links makes its image addresses when it has an image.
func (g *Gallery) item(j *jobs.Job, links func(j *jobs.Job) (thumb, image string)) Item {
	it := Item{ID: j.ID, State: string(j.State), Prompt: j.Spec.Prompt, Reason: string(j.Reason)}
	if j.State == jobs.Failed || j.State == jobs.Queued {
		it.Error = j.Error
	}
	if j.State == jobs.Queued && j.Held != "" {
		it.Reason, it.Error = "held", j.Held
	}
	if j.State != jobs.Archived {
		return it
	}
	if _, err := ImageKey(g.o.Store, j); err != nil {
		it.Missing = "not in the archive this gallery reads"
		if g.o.Store == nil {
			it.Missing = "no archive configured"
		}
		return it
	}
	it.Thumb, it.Image = links(j)
	return it
}
