package jobs

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The ledger's Redis schema and the tasks' ids are this package's own: other packages change a
// job through the Ledger's verbs and queue its tasks through Tasks. The ledger's change type is
// unexported, so no caller can name a record field through it; this test keeps the two other
// ways in (a task id of one's own, a hand-made ledger key) out of the code the binary ships.
func TestSchemaStaysInJobs(t *testing.T) {
	t.Parallel()
	forbidden := []string{"asynq.TaskID(", `":job:"`, `":batch:"`}
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "jobs" && filepath.Dir(path) == root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range forbidden {
			if strings.Contains(string(b), f) {
				t.Errorf("%s uses %s: the ledger's keys and the tasks' ids belong to package jobs (use its Ledger verbs and Tasks)", path, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
