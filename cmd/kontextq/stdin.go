package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// A job file given as "-" is read from standard input, in --format (JSONL unless told). The
// loader reads its input more than once (validation, the input check, enqueuing), so stdin is
// first copied to a temporary file, removed when the command ends. A stream has no name to take
// the batch from, so it needs --batch; messages call it "stdin", relative inputImage paths are
// relative to the current directory, and --skip-invalid writes the bad lines to
// <batch>.rejects.jsonl there.

// stdinPath is the file argument that means standard input.
const stdinPath = "-"

// spoolStdin copies in to a temporary file and points o at it. The returned function removes
// the copy.
func spoolStdin(o loadOptions, in io.Reader) (loadOptions, func(), error) {
	f, err := os.CreateTemp("", "kontextq-stdin-*")
	if err != nil {
		return o, nil, fmt.Errorf("reading jobs from stdin: %w", err)
	}
	remove := func() { _ = os.Remove(f.Name()) }
	_, err = io.Copy(f, in)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		remove()
		return o, nil, fmt.Errorf("reading jobs from stdin: %w", err)
	}
	o.Path, o.Name, o.Stdin = f.Name(), "stdin", true
	return o, remove, nil
}

// errStdinBatch refuses "-" without --batch.
var errStdinBatch = errors.New("--batch: reading jobs from stdin (-) needs a batch name, e.g. --batch spring")
