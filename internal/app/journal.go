package app

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
)

// JournalPath is where run keeps its journal without REDIS_URL: inside a local archive, as
// <archive>/.kontextq/journal.jsonl, beside the images whose payment it records (the archive's
// listings skip hidden names); for an S3 archive, in the user's state directory
// ($XDG_STATE_HOME, else ~/.local/state) as kontextq/journal-<hash of the location>.jsonl.
func JournalPath(archiveLoc string, getenv func(string) string) (string, error) {
	dir := archiveLoc
	if strings.HasPrefix(archiveLoc, "file://") {
		dir = strings.TrimPrefix(strings.TrimPrefix(archiveLoc, "file://"), "localhost")
	} else if strings.Contains(archiveLoc, "://") {
		state := getenv("XDG_STATE_HOME")
		if state == "" {
			home := getenv("HOME")
			if home == "" {
				return "", fmt.Errorf("no directory for the journal of archive %s: set XDG_STATE_HOME or HOME, or use REDIS_URL", archiveLoc)
			}
			state = filepath.Join(home, ".local", "state")
		}
		sum := sha256.Sum256([]byte(archiveLoc))
		return filepath.Join(state, "kontextq", "journal-"+hex.EncodeToString(sum[:6])+".jsonl"), nil
	}
	return filepath.Join(dir, ".kontextq", "journal.jsonl"), nil
}
