package main

import (
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/kie/kiesim"
)

// A batch run with --max-credits and no configured price: the price is measured at the first
// submission, run stops at the cap and says how many jobs the budget holds and why, status and
// export show it, and running again with a higher cap releases and finishes them, each paid once.
func TestRunStopsAtItsCreditCap(t *testing.T) {
	t.Parallel()
	env := redistest.New(t)
	sim := fastSim(t, kiesim.Options{Prices: map[string]float64{"flux-kontext-pro": 5, "flux-kontext-max": 10}})
	dir := t.TempDir()
	envv := workerEnv(env, sim, dir)
	var lines []string
	for i := range 12 {
		lines = append(lines, fmt.Sprintf("a paper crane, fold %d", i))
	}
	file := writeFile(t, filepath.Join(dir, "cranes.txt"), []byte(strings.Join(lines, "\n")+"\n"))

	if code, out := kq(t, dir, envv, "run", file, "--max-credits", "lots", "--no-serve"); code != exitUsage || !strings.Contains(out, `--max-credits "lots"`) {
		t.Fatalf("run --max-credits lots: exit %d, want %d naming the flag\n%s", code, exitUsage, out)
	}

	code, out := kq(t, dir, envv, "run", file, "--max-credits", "20", "--no-serve")
	st := sim.Stats()
	if code != exitFailed || !strings.Contains(out, "8 jobs held by the budget") || !strings.Contains(out, "budget: batch cap 20 credits reached") {
		t.Fatalf("run capped at 20 credits: exit %d, want %d saying 8 jobs are held and why\n%s", code, exitFailed, out)
	}
	if st.Accepted != 4 || st.CreditsSpent != 20 {
		t.Fatalf("Kie accepted %d calls and billed %v credits; want 4 calls, 20 credits (the price measured at 5)", st.Accepted, st.CreditsSpent)
	}

	code, out = kq(t, dir, envv, "status", "cranes")
	if code != 0 || !strings.Contains(out, "stopped by its budget") || !strings.Contains(out, "budget: 20 credits spent of a cap of 20") ||
		!strings.Contains(out, "held: 8 jobs, budget: batch cap 20 credits reached") || !strings.Contains(out, "--max-credits N") {
		t.Errorf("status does not show the spend, the cap and the held jobs with their reason:\n%s", out)
	}
	code, out = kq(t, dir, envv, "budget", "cranes")
	if code != 0 || !strings.Contains(out, "flux-kontext-pro 5 (measured") {
		t.Errorf("budget does not show the measured price:\n%s", out)
	}
	code, out = kq(t, dir, envv, "export", "cranes", "--format", "csv")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 13 {
		t.Fatalf("export: exit %d, %v\n%s", code, err, out)
	}
	col := map[string]int{}
	for i, c := range recs[0] {
		col[c] = i
	}
	held, charged := 0, 0
	for _, r := range recs[1:] {
		switch {
		case r[col["state"]] == "queued" && r[col["held"]] == "budget: batch cap 20 credits reached":
			held++
		case r[col["state"]] == "archived" && r[col["credits"]] == "5":
			charged++
		}
	}
	if held != 8 || charged != 4 {
		t.Errorf("export shows %d held jobs with their reason and %d archived at 5 credits; want 8 and 4\n%s", held, charged, out)
	}

	code, out = kq(t, dir, envv, "run", file, "--max-credits", "60", "--no-serve")
	if code != 0 || !strings.Contains(out, "8 held jobs released") || !strings.Contains(out, "12 archived, 0 failed of 12") {
		t.Fatalf("run again with a cap of 60: exit %d, want 0 with every job archived\n%s", code, out)
	}
	if st := sim.Stats(); st.Accepted != 12 || st.CreditsSpent != 60 {
		t.Errorf("Kie accepted %d calls and billed %v credits; want each job paid once: 12, 60", st.Accepted, st.CreditsSpent)
	}
	if code, out := kq(t, dir, envv, "status"); code != 0 || !strings.Contains(out, "60/60") {
		t.Errorf("the batch list does not show the spend against the cap:\n%s", out)
	}
}
