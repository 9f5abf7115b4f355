package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/archive"
)

func testImage(t *testing.T, format string) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 16, 12))
	for x := range 16 {
		img.Set(x, x%12, color.RGBA{R: uint8(x * 15), G: 80, B: 200, A: 255})
	}
	var b bytes.Buffer
	var err error
	if format == "png" {
		err = png.Encode(&b, img)
	} else {
		err = jpeg.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// xmpOf finds the XMP packet in a PNG (iTXt XML:com.adobe.xmp) or a JPEG (APP1 with Adobe's
// namespace), and the PNG's plain iTXt entries.
func xmpOf(t *testing.T, data []byte, format string) (string, map[string]string) {
	t.Helper()
	plain := map[string]string{}
	xmp := ""
	if format == "png" {
		for i := 8; i+8 <= len(data); {
			n := int(binary.BigEndian.Uint32(data[i:]))
			typ, body := string(data[i+4:i+8]), data[i+8:i+8+n]
			if typ == "iTXt" {
				parts := bytes.SplitN(body, []byte{0}, 2)
				kw, rest := string(parts[0]), parts[1]
				if rest[0] != 0 {
					t.Fatalf("iTXt %s compressed", kw)
				}
				rest = rest[2:]                                   // compression flag and method
				rest = rest[bytes.IndexByte(rest, 0)+1:]          // language tag
				text := string(rest[bytes.IndexByte(rest, 0)+1:]) // translated keyword
				if kw == "XML:com.adobe.xmp" {
					xmp = text
				} else {
					plain[kw] = text
				}
			}
			i += 12 + n
		}
		return xmp, plain
	}
	for i := 2; i+4 <= len(data) && data[i] == 0xFF && data[i+1] != 0xDA; {
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		seg := data[i+4 : i+2+n]
		if data[i+1] == 0xE1 && bytes.HasPrefix(seg, []byte("http://ns.adobe.com/xap/1.0/\x00")) {
			xmp = string(seg[len("http://ns.adobe.com/xap/1.0/\x00"):])
		}
		i += 2 + n
	}
	return xmp, plain
}

// xmpValues parses packet as XML (failing on anything not well-formed) and returns the text of
// each element by its local name.
func xmpValues(t *testing.T, packet string) map[string]string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(packet))
	vals := map[string]string{}
	var stack []string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("XMP is not well-formed XML: %v\n%s", err, packet)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			stack = append(stack, tok.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				vals[stack[len(stack)-1]] += string(tok)
			}
		}
	}
	return vals
}

func TestEmbedProvenance(t *testing.T) {
	prompts := []string{
		"a red barn at dusk",
		`<script>alert("x")</script> & 'quotes' </kontextq:prompt>`,
		"Füchse im Schnee — 雪の中の狐 🦊\nsecond line",
		"]]> <?xpacket end=\"w\"?> --> <!-- ",
	}
	for _, format := range []string{"png", "jpeg"} {
		for _, prompt := range prompts {
			t.Run(format+"/"+prompt[:5], func(t *testing.T) {
				src := testImage(t, format)
				p := archive.Provenance{Prompt: prompt, Model: "flux-kontext-pro", TaskID: "task-7", JobID: "line-3", Batch: "b1",
					Request: []byte(`{"prompt":"x","model":"flux-kontext-pro","aspectRatio":"16:9"}`)}
				out, emb, err := archive.EmbedProvenance(src, format, p)
				if err != nil {
					t.Fatal(err)
				}
				var decode func(io.Reader) (image.Image, error) = png.Decode
				if format == "jpeg" {
					decode = jpeg.Decode
				}
				if _, err := decode(bytes.NewReader(out)); err != nil {
					t.Fatalf("image with provenance no longer decodes: %v", err)
				}
				stripped := append(append([]byte{}, out[:emb.Offset]...), out[emb.Offset+emb.Length:]...)
				if !bytes.Equal(stripped, src) {
					t.Fatalf("without the embedded run (%+v) the bytes are not the ones served", emb)
				}
				packet, plain := xmpOf(t, out, format)
				if packet == "" {
					t.Fatal("no XMP packet found")
				}
				v := xmpValues(t, packet)
				want := map[string]string{"DigitalSourceType": archive.DigitalSourceType, "prompt": prompt, "li": prompt,
					"model": "flux-kontext-pro", "kieTaskId": "task-7", "jobId": "line-3", "batch": "b1", "request": string(p.Request)}
				for k, w := range want {
					if v[k] != w {
						t.Errorf("XMP %s = %q, want %q", k, v[k], w)
					}
				}
				if format == "png" {
					for k, w := range map[string]string{"Description": prompt, "kie:taskId": "task-7", "DigitalSourceType": archive.DigitalSourceType, "kontextq:request": string(p.Request)} {
						if plain[k] != w {
							t.Errorf("iTXt %s = %q, want %q", k, plain[k], w)
						}
					}
				}
			})
		}
	}
}

func TestEmbedProvenanceRefuses(t *testing.T) {
	for _, c := range []struct {
		name, format string
		data         []byte
	}{
		{"png-garbage", "png", []byte("not a png at all, just text, long enough to pass a length check")},
		{"jpeg-garbage", "jpeg", []byte("GIF89a....")},
		{"webp", "webp", []byte("RIFF....WEBP")},
	} {
		if _, _, err := archive.EmbedProvenance(c.data, c.format, archive.Provenance{Prompt: "x"}); err == nil {
			t.Errorf("%s: embedded into a file that is not one", c.name)
		}
	}
	huge := strings.Repeat("a", 70000)
	if _, _, err := archive.EmbedProvenance(testImage(t, "jpeg"), "jpeg", archive.Provenance{Prompt: huge}); err == nil {
		t.Error("a prompt too large for one JPEG segment was embedded")
	}
}

// verify hashes an image archived with provenance twice: as archived against sha256, and without
// the embedded run against the sourceSha256 of what Kie served.
func TestVerifyEmbedded(t *testing.T) {
	ctx := context.Background()
	s, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := testImage(t, "png")
	out, emb, err := archive.EmbedProvenance(src, "png", archive.Provenance{Prompt: "a kite", JobID: "k", Batch: "b"})
	if err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	if err := s.Put(ctx, archive.ImageKey("b", "k", "png"), bytes.NewReader(out), archive.Info{Size: int64(len(out)), SHA256: sum(out)}); err != nil {
		t.Fatal(err)
	}
	sc := archive.Sidecar{ID: "k", Batch: "b", Format: "png", SHA256: sum(out), Bytes: int64(len(out)),
		SourceSHA256: sum(src), SourceBytes: int64(len(src)), Embedded: &emb}
	check := func(sc archive.Sidecar) archive.Report {
		t.Helper()
		if err := archive.PutSidecar(ctx, s, sc); err != nil {
			t.Fatal(err)
		}
		rep, err := archive.VerifyBatch(ctx, s, "b", nil)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := check(sc); rep.Checked != 1 || rep.Embedded != 1 || len(rep.Findings) != 0 {
		t.Fatalf("intact embedded image: %+v", rep)
	}
	sc.SourceSHA256 = sum([]byte("something else"))
	rep := check(sc)
	if len(rep.Findings) != 1 || !strings.Contains(rep.Findings[0].Detail, "without its embedded metadata") {
		t.Fatalf("an image whose bytes as served no longer match sourceSha256 passed: %+v", rep)
	}
}
