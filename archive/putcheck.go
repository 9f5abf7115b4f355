package archive

// The checks Put makes while it streams an object in: the declared size and sha256 against what
// arrives. (Checking a batch already in the archive is verify.go.)

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
)

// checkWant normalises and validates what Put is told to expect. Both fields are required:
// a store that published content it could not check would break the archive's promise.
func checkWant(want Info) (Info, error) {
	if want.Size < 0 {
		return want, fmt.Errorf("archive: declared size %d is negative", want.Size)
	}
	want.SHA256 = strings.ToLower(want.SHA256)
	if len(want.SHA256) != sha256.Size*2 {
		return want, fmt.Errorf("archive: declared sha256 %q is not 64 hex digits", want.SHA256)
	}
	if _, err := hex.DecodeString(want.SHA256); err != nil {
		return want, fmt.Errorf("archive: declared sha256 %q is not hex", want.SHA256)
	}
	return want, nil
}

// verifier is the reader every store copies from. It hashes and counts what passes, stops
// early once the stream is longer than declared, notices a cancelled context between reads,
// and at the end of the stream returns ErrCorrupt instead of io.EOF when the content does
// not match. Because a mismatch never looks like a clean end of stream, whatever consumes
// it (an io.Copy, an SDK uploader reading the stream itself) cannot finish the object.
type verifier struct {
	ctx  context.Context
	r    io.Reader
	want Info
	h    hash.Hash
	n    int64
	eof  bool  // the source ended and matched
	err  error // sticky once set, so a retrying consumer sees the same failure
}

func newVerifier(ctx context.Context, r io.Reader, want Info) *verifier {
	// Reading one byte past the declared size is how an over-long stream is detected
	// without streaming the rest of it.
	return &verifier{ctx: ctx, r: io.LimitReader(r, want.Size+1), want: want, h: sha256.New()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if err := v.ctx.Err(); err != nil {
		v.err = err
		return 0, err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.want.Size {
		v.err = fmt.Errorf("%w: stream is longer than the declared %d bytes", ErrCorrupt, v.want.Size)
		return 0, v.err
	}
	switch {
	case err == io.EOF:
		if verr := v.verify(); verr != nil {
			v.err = verr
			return n, verr
		}
		v.eof = true
		return n, io.EOF
	case err != nil:
		v.err = fmt.Errorf("read source after %d bytes: %w", v.n, err)
		return n, v.err
	}
	return n, nil
}

func (v *verifier) verify() error {
	if v.n != v.want.Size {
		return fmt.Errorf("%w: got %d bytes, declared %d", ErrCorrupt, v.n, v.want.Size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.SHA256 {
		return fmt.Errorf("%w: got sha256 %s, declared %s", ErrCorrupt, got, v.want.SHA256)
	}
	return nil
}

// done reports whether the whole stream was read and matched; a store publishes only then.
// The context is checked once more so that a cancellation after the last read still wins.
func (v *verifier) done() error {
	if v.err != nil {
		return v.err
	}
	if err := v.ctx.Err(); err != nil {
		return err
	}
	if !v.eof {
		return fmt.Errorf("archive: source read only up to %d bytes", v.n)
	}
	return nil
}
