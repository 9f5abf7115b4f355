package jobs

import (
	"context"
	"fmt"
	"testing"

	"github.com/kontextq/kontextq/internal/redistest"
)

// pageSetup loads n jobs into batch "b" of a fresh namespace; job i has the prompt
// "<animal> number i" with animal cycling through kite, fox, owl. Every tenth job has failed.
func pageSetup(tb testing.TB, n int) *Ledger {
	tb.Helper()
	env := redistest.New(tb)
	l := NewLedger(env.Client, LedgerOptions{Namespace: env.Prefix + "ns"})
	ctx := context.Background()
	animals := []string{"Kite", "fox", "owl"}
	for start := 0; start < n; start += 5000 {
		ss := make([]*Spec, 0, 5000)
		for i := start; i < min(n, start+5000); i++ {
			ss = append(ss, &Spec{Batch: "b", ID: fmt.Sprintf("j%06d", i), Prompt: fmt.Sprintf("%s number %d", animals[i%3], i)})
		}
		if _, err := l.CreateMany(ctx, ss, Bulk); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < n; i += 10 {
		if ok, err := l.Fail(ctx, Ref{"b", fmt.Sprintf("j%06d", i)}, nil, "", Rejected, "refused"); err != nil || !ok {
			tb.Fatalf("Fail: %v %v", ok, err)
		}
	}
	return l
}

func pageIDs(js []*Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

func TestPageWalksABatchInLoadOrder(t *testing.T) {
	l := pageSetup(t, 250)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		q        PageQuery
		first    string
		n        int
		next     int64
		wantNext bool
	}{
		{"first page", PageQuery{Limit: 100}, "j000000", 100, 100, true},
		{"last page", PageQuery{From: 200, Limit: 100}, "j000200", 50, -1, false},
		{"past the end", PageQuery{From: 900}, "", 0, -1, false},
		{"failed", PageQuery{State: Failed, Limit: 10}, "j000000", 10, 91, true},
		{"failed, rest", PageQuery{State: Failed, From: 91, Limit: 100}, "j000100", 15, -1, false},
		{"queued", PageQuery{State: Queued, Limit: 3}, "j000001", 3, 4, true},
		{"search ignores case", PageQuery{Search: "KITE NUMBER 3", Limit: 100}, "j000003", 5, -1, false}, // kites 3, 30, 33, 36, 39
		{"search by id", PageQuery{Search: "j00024", Limit: 100}, "j000240", 10, -1, false},
		{"search and state", PageQuery{Search: "owl", State: Failed, Limit: 100}, "j000020", 8, -1, false},
		{"search for nothing", PageQuery{Search: "<script>", Limit: 100}, "", 0, -1, false},
		{"scan bound", PageQuery{State: Failed, From: 1, Scan: 5}, "", 0, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := l.Page(ctx, "b", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Jobs) != tc.n {
				t.Fatalf("%d jobs %v, want %d", len(p.Jobs), pageIDs(p.Jobs), tc.n)
			}
			if tc.n > 0 && p.Jobs[0].ID != tc.first {
				t.Errorf("first job %s, want %s", p.Jobs[0].ID, tc.first)
			}
			if p.Next != tc.next {
				t.Errorf("next %d, want %d", p.Next, tc.next)
			}
			if p.Len != 250 {
				t.Errorf("len %d, want 250", p.Len)
			}
			for _, j := range p.Jobs {
				if tc.q.State != "" && j.State != tc.q.State {
					t.Errorf("%s is %s, want only %s", j.ID, j.State, tc.q.State)
				}
			}
		})
	}
}

func TestPageSearchFindsPromptsWithEscapedCharacters(t *testing.T) {
	env := redistest.New(t)
	l := NewLedger(env.Client, LedgerOptions{Namespace: env.Prefix + "ns"})
	ctx := context.Background()
	prompts := []string{`a <script>alert("x")</script> & more`, `plain words`, "caf\u00e9 \u2028 line"}
	for i, p := range prompts {
		if _, _, err := l.Create(ctx, &Spec{Batch: "b", ID: fmt.Sprint("j", i), Prompt: p}, Bulk); err != nil {
			t.Fatal(err)
		}
	}
	for q, want := range map[string]string{`<script>alert("x")`: "j0", "& MORE": "j0", "CAFÉ": "j2", "\u2028 LINE": "j2", "words": "j1"} {
		p, err := l.Page(ctx, "b", PageQuery{Search: q})
		if err != nil {
			t.Fatal(err)
		}
		if got := pageIDs(p.Jobs); len(got) != 1 || got[0] != want {
			t.Errorf("search %q found %v, want [%s]", q, got, want)
		}
	}
}

// BenchmarkPage shows what a page of a 100,000-job batch costs against the first page of it:
// a deep page and a filtered page read only what they show.
//
//	go test ./jobs -run '^$' -bench Page -benchtime 200x
func BenchmarkPage(b *testing.B) {
	l := pageSetup(b, 100_000)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		q    PageQuery
	}{
		{"page1", PageQuery{}},
		{"page1000", PageQuery{From: 99_900}},
		{"failed_page1", PageQuery{State: Failed}},
		{"search_page1", PageQuery{Search: "owl number 9"}},
		{"search_rare", PageQuery{Search: "owl number 99998"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				p, err := l.Page(ctx, "b", c.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Jobs) == 0 {
					b.Fatal("empty page")
				}
			}
		})
	}
}

func TestPaidCountsGenerateCallsByModel(t *testing.T) {
	env := redistest.New(t)
	l := NewLedger(env.Client, LedgerOptions{Namespace: env.Prefix + "ns"})
	ctx := context.Background()
	specs := []*Spec{{Batch: "b", ID: "a", Prompt: "a"}, {Batch: "b", ID: "b", Prompt: "b", Model: "flux-kontext-max"},
		{Batch: "b", ID: "c", Prompt: "c"}, {Batch: "b", ID: "d", Prompt: "d"}}
	if _, err := l.CreateMany(ctx, specs, Bulk); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if ok, err := l.RecordSubmitted(ctx, Ref{"b", id}, "t-"+id); err != nil || !ok {
			t.Fatalf("submitted %s: %v %v", id, ok, err)
		}
	}
	// A requeued job paid for its first call and pays again for the next.
	if ok, err := l.Requeue(ctx, Ref{"b", "c"}, "t-c", "failed"); err != nil || !ok {
		t.Fatalf("requeue: %v %v", ok, err)
	}
	if ok, err := l.RecordSubmitted(ctx, Ref{"b", "c"}, "t-c2"); err != nil || !ok {
		t.Fatalf("resubmitted: %v %v", ok, err)
	}
	paid, err := l.Paid(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(paid) != 2 || paid["flux-kontext-pro"] != 3 || paid["flux-kontext-max"] != 1 {
		t.Errorf("paid %v, want 3 flux-kontext-pro and 1 flux-kontext-max", paid)
	}
}
