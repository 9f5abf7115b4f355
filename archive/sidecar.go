package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Sidecar is the lasting record beside each image: what was asked, what Kie answered, and
// what was stored. It outlives the job's entry in Redis, so it holds everything needed to
// trace an image back to its request without the ledger.
type Sidecar struct {
	ID           string          `json:"id"`
	Batch        string          `json:"batch"`
	Name         string          `json:"name,omitempty"`      // the image's base name when it is not the id (--name)
	File         string          `json:"file,omitempty"`      // the job file the job was loaded from
	Line         int             `json:"line,omitempty"`      // the line of File it starts on
	TaskID       string          `json:"taskId"`              // Kie's task id
	Request      json.RawMessage `json:"request"`             // the fields sent to generate
	SourceURL    string          `json:"sourceUrl"`           // the resultImageUrl downloaded
	SHA256       string          `json:"sha256"`              // of the image, lowercase hex
	Bytes        int64           `json:"bytes"`               // the image's size
	Format       string          `json:"format"`              // "jpeg" or "png"
	CreateTime   time.Time       `json:"createTime"`          // Kie's
	CompleteTime time.Time       `json:"completeTime"`        // Kie's
	ArchivedAt   time.Time       `json:"archivedAt"`          // when the image was published
	ExpiresAt    time.Time       `json:"expiresAt"`           // when Kie was expected to drop it
	OriginURL    string          `json:"originUrl,omitempty"` // Kie's originImageUrl, if any
	Attempts     int             `json:"attempts,omitempty"`  // downloads it took
	Origin       *OriginImage    `json:"origin,omitempty"`    // the archived originImageUrl, when asked for

	// With --embed-metadata the archived bytes carry provenance and differ from what Kie served:
	// SHA256 and Bytes describe the archived file, SourceSHA256 and SourceBytes what Kie served,
	// and Embedded where the inserted bytes lie.
	SourceSHA256 string     `json:"sourceSha256,omitempty"`
	SourceBytes  int64      `json:"sourceBytes,omitempty"`
	Embedded     *Embedding `json:"embedded,omitempty"`
}

// FileName is the base name of the image's key: its Name, or its id.
func (sc Sidecar) FileName() string {
	if sc.Name != "" {
		return sc.Name
	}
	return sc.ID
}

// OriginImage records the copy of Kie's originImageUrl archived beside the result
// (--archive-origin), or why there is none: it lives only 10 minutes, and failing to fetch it
// never fails the main image.
type OriginImage struct {
	Key    string `json:"key,omitempty"`    // "<batch>/<id>.origin.<format>"
	SHA256 string `json:"sha256,omitempty"` // lowercase hex
	Bytes  int64  `json:"bytes,omitempty"`
	Error  string `json:"error,omitempty"` // why it was not archived
}

// maxSidecar bounds what ReadSidecar reads: a sidecar is a few kilobytes, and anything far
// larger under its key is not one.
const maxSidecar = 1 << 20

// PutSidecar stores sc at SidecarKey(sc.Batch, sc.ID), as indented JSON, verified like any
// other object.
func PutSidecar(ctx context.Context, s Store, sc Sidecar) error {
	data, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return fmt.Errorf("archive: encode sidecar %s/%s: %w", sc.Batch, sc.ID, err)
	}
	data = append(data, '\n')
	sum := sha256.Sum256(data)
	want := Info{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), ContentType: "application/json"}
	return s.Put(ctx, SidecarKey(sc.Batch, sc.ID), bytes.NewReader(data), want)
}

// ReadSidecar reads the sidecar of job id in batch; ErrNotFound (wrapped) when there is none.
func ReadSidecar(ctx context.Context, s Store, batch, id string) (Sidecar, error) {
	key := SidecarKey(batch, id)
	rc, err := s.Open(ctx, key)
	if err != nil {
		return Sidecar{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxSidecar+1))
	if err != nil {
		return Sidecar{}, fmt.Errorf("archive: read sidecar %s: %w", key, err)
	}
	if len(data) > maxSidecar {
		return Sidecar{}, fmt.Errorf("archive: read sidecar %s: larger than %d bytes", key, maxSidecar)
	}
	var sc Sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return Sidecar{}, fmt.Errorf("archive: decode sidecar %s: %w", key, err)
	}
	return sc, nil
}
