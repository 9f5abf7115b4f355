package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// A batch is read a page at a time by whoever shows it to a person (the gallery): a page costs
// the jobs it shows, not the size of the batch, when nothing filters it; a filtered page reads
// only the two fields it filters on until the page is full, and never more than a bounded
// number of positions, so a rare match in a huge batch costs a bounded time per page.

// PageQuery selects jobs of a batch in load order.
type PageQuery struct {
	// From is the position in the batch's load order to start at (0, the first job loaded).
	From int64
	// Limit is the most jobs the page holds (100 when 0).
	Limit int
	// State keeps only jobs in this state; "" keeps every state.
	State State
	// Search keeps only jobs whose prompt or id contains it, ignoring case; "" keeps all.
	Search string
	// Scan bounds the positions a filtered page examines (20,000 when 0). A page that reaches
	// it ends short, with Next where it stopped.
	Scan int
}

// Page is a run of a batch's jobs in load order.
type Page struct {
	Jobs []*Job
	// Next is the position to continue from; -1 when no position is left to examine.
	Next int64
	// Scanned is how many positions the page examined.
	Scanned int64
	// Len is how many jobs were ever loaded into the batch (its positions).
	Len int64
}

// pageChunk is how many positions a filtered page examines per round trip.
const pageChunk = 1000

// Page reads a page of a batch's jobs. Jobs whose record has expired after the retention hold
// their position but are not shown.
func (l *Ledger) Page(ctx context.Context, batch string, q PageQuery) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.Scan <= 0 {
		q.Scan = 20_000
	}
	q.From = max(q.From, 0)
	q.Search = strings.ToLower(strings.TrimSpace(q.Search))
	n, err := l.rdb.LLen(ctx, l.batchJobs(batch)).Result()
	if err != nil {
		return Page{}, fmt.Errorf("ledger page %s: %w", batch, err)
	}
	p := Page{Len: n, Next: -1}
	if q.State == "" && q.Search == "" {
		return l.plainPage(ctx, batch, q, p)
	}
	var refs []string
	pos := q.From
scan:
	for pos < n && p.Scanned < int64(q.Scan) {
		want := min(int64(pageChunk), int64(q.Scan)-p.Scanned)
		ids, err := l.rdb.LRange(ctx, l.batchJobs(batch), pos, pos+want-1).Result()
		if err != nil {
			return Page{}, fmt.Errorf("ledger page %s: %w", batch, err)
		}
		if len(ids) == 0 {
			break
		}
		fields := []string{fState}
		if q.Search != "" {
			fields = append(fields, fSpec)
		}
		cmds := make([]*redis.SliceCmd, len(ids))
		_, err = l.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = pl.HMGet(ctx, l.jobKey(Ref{Batch: batch, ID: id}), fields...)
			}
			return nil
		})
		if err != nil {
			return Page{}, fmt.Errorf("ledger page %s: %w", batch, err)
		}
		for i, c := range cmds {
			p.Scanned++
			v := c.Val()
			st, _ := v[0].(string)
			spec := ""
			if len(v) > 1 {
				spec, _ = v[1].(string)
			}
			if st != "" && q.matches(ids[i], State(st), spec) {
				refs = append(refs, Ref{Batch: batch, ID: ids[i]}.String())
				if len(refs) == q.Limit {
					pos += int64(i) + 1
					break scan
				}
			}
		}
		pos += int64(len(ids))
	}
	if pos < n {
		p.Next = pos
	}
	js, err := l.getMany(ctx, refs)
	if err != nil {
		return Page{}, err
	}
	// A job may have moved on between the scan and the read.
	for _, j := range js {
		if q.State == "" || j.State == q.State {
			p.Jobs = append(p.Jobs, j)
		}
	}
	return p, nil
}

// plainPage is an unfiltered page: the positions it shows and nothing else.
func (l *Ledger) plainPage(ctx context.Context, batch string, q PageQuery, p Page) (Page, error) {
	ids, err := l.rdb.LRange(ctx, l.batchJobs(batch), q.From, q.From+int64(q.Limit)-1).Result()
	if err != nil {
		return Page{}, fmt.Errorf("ledger page %s: %w", batch, err)
	}
	refs := make([]string, len(ids))
	for i, id := range ids {
		refs[i] = Ref{Batch: batch, ID: id}.String()
	}
	if p.Jobs, err = l.getMany(ctx, refs); err != nil {
		return Page{}, err
	}
	p.Scanned = int64(len(ids))
	if end := q.From + int64(len(ids)); end < p.Len {
		p.Next = end
	}
	return p, nil
}

// matches applies the query's filters to a job's id, state and stored spec. The search is
// tried on the raw JSON first: a miss there is a miss in the prompt whenever the search has no
// character JSON escapes, which spares decoding most specs of a large batch.
func (q *PageQuery) matches(id string, st State, spec string) bool {
	if q.State != "" && st != q.State {
		return false
	}
	if q.Search == "" || strings.Contains(strings.ToLower(id), q.Search) {
		return true
	}
	raw := strings.ToLower(spec)
	if !strings.ContainsAny(q.Search, "\"\\<>&\u2028\u2029") && !hasControl(q.Search) && !strings.Contains(raw, q.Search) {
		return false
	}
	var s struct {
		Prompt string `json:"prompt"`
	}
	if json.Unmarshal([]byte(spec), &s) != nil {
		return false
	}
	return strings.Contains(strings.ToLower(s.Prompt), q.Search)
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// CheckName reports whether s could be a job id or batch name ("" when it could, else what the
// rule is). Names that could not be loaded need no lookup: whoever shows jobs by name from an
// address can refuse them outright.
func CheckName(s string) string { return checkName(s, max(MaxIDLen, MaxBatchLen)) }

// Paid counts a batch's paid generate calls by model (Kie's default model for jobs that name
// none), reading two fields of every job still in the ledger.
func (l *Ledger) Paid(ctx context.Context, batch string) (map[string]int64, error) {
	out := map[string]int64{}
	for start := int64(0); ; start += pageChunk {
		ids, err := l.rdb.LRange(ctx, l.batchJobs(batch), start, start+pageChunk-1).Result()
		if err != nil {
			return nil, fmt.Errorf("ledger paid %s: %w", batch, err)
		}
		cmds := make([]*redis.SliceCmd, len(ids))
		_, err = l.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = pl.HMGet(ctx, l.jobKey(Ref{Batch: batch, ID: id}), fSubs, fSpec)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("ledger paid %s: %w", batch, err)
		}
		for _, c := range cmds {
			v := c.Val()
			ns, _ := v[0].(string)
			n, _ := strconv.ParseInt(ns, 10, 64)
			if n == 0 {
				continue
			}
			raw, _ := v[1].(string)
			var s struct {
				Model string `json:"model"`
			}
			_ = json.Unmarshal([]byte(raw), &s)
			out[or(s.Model, defaultModel)] += n
		}
		if len(ids) < pageChunk {
			return out, nil
		}
	}
}
