package archive

// Provenance embedded in an archived image (--embed-metadata): an XMP packet and plain text
// entries inserted into the image's bytes as they are, never re-encoded. The bytes Kie served
// stay a contiguous whole around the one inserted run, so the sidecar records where the run lies
// and verify can hash the file both as archived and as Kie served it.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// DigitalSourceType is IPTC's term for media made by a trained model, embedded in every image
// archived with provenance.
const DigitalSourceType = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

// xmpNamespace names the project's own XMP properties.
const xmpNamespace = "https://github.com/kontextq/kontextq/ns/1.0/"

// Embedding records provenance inserted into an archived image: the Length bytes at Offset are
// the inserted ones, and the file without them is, byte for byte, what Kie served.
type Embedding struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Provenance is what an archived image is made to carry about itself.
type Provenance struct {
	Prompt  string
	Model   string
	TaskID  string // Kie's
	JobID   string
	Batch   string
	Request json.RawMessage // the fields sent to generate, as JSON
}

// ProvenanceOf is the provenance of the image sc describes; prompt and model come from its
// request.
func ProvenanceOf(sc Sidecar) Provenance {
	var req struct {
		Prompt string `json:"prompt"`
		Model  string `json:"model"`
	}
	_ = json.Unmarshal(sc.Request, &req)
	return Provenance{Prompt: req.Prompt, Model: req.Model, TaskID: sc.TaskID, JobID: sc.ID, Batch: sc.Batch, Request: sc.Request}
}

// maxXMPJPEG is the most XMP one JPEG APP1 segment holds: 65535 less the length field and the
// namespace header.
const maxXMPJPEG = 65535 - 2 - len(jpegXMPHeader)

const jpegXMPHeader = "http://ns.adobe.com/xap/1.0/\x00"

// EmbedProvenance returns img ("png" or "jpeg") with p inserted, and where: for PNG, iTXt
// chunks right after IHDR (the XMP packet under keyword XML:com.adobe.xmp, then one plain entry
// per field); for JPEG, an XMP APP1 segment after SOI (and after a JFIF APP0, if one leads).
func EmbedProvenance(img []byte, format string, p Provenance) ([]byte, Embedding, error) {
	packet := xmpPacket(p)
	var at int
	var ins []byte
	switch format {
	case "png":
		const sig = "\x89PNG\r\n\x1a\n"
		if len(img) < 33 || string(img[:8]) != sig || string(img[12:16]) != "IHDR" || binary.BigEndian.Uint32(img[8:12]) != 13 {
			return nil, Embedding{}, errors.New("provenance: not a PNG starting with IHDR")
		}
		at = 33
		ins = pngITXt(nil, "XML:com.adobe.xmp", packet)
		for _, kv := range p.entries() {
			ins = pngITXt(ins, kv[0], kv[1])
		}
	case "jpeg":
		if len(img) < 4 || img[0] != 0xFF || img[1] != 0xD8 {
			return nil, Embedding{}, errors.New("provenance: not a JPEG (no SOI)")
		}
		at = 2
		if len(img) >= 6 && img[2] == 0xFF && img[3] == 0xE0 {
			at = 4 + int(binary.BigEndian.Uint16(img[4:6]))
			if at > len(img) {
				return nil, Embedding{}, errors.New("provenance: JPEG APP0 segment runs past the end")
			}
		}
		if len(packet) > maxXMPJPEG {
			return nil, Embedding{}, fmt.Errorf("provenance: XMP packet of %d bytes exceeds one JPEG segment's %d", len(packet), maxXMPJPEG)
		}
		ins = []byte{0xFF, 0xE1, 0, 0}
		binary.BigEndian.PutUint16(ins[2:], uint16(2+len(jpegXMPHeader)+len(packet)))
		ins = append(append(ins, jpegXMPHeader...), packet...)
	default:
		return nil, Embedding{}, fmt.Errorf("provenance: cannot embed into format %q (png or jpeg)", format)
	}
	out := make([]byte, 0, len(img)+len(ins))
	out = append(append(append(out, img[:at]...), ins...), img[at:]...)
	return out, Embedding{Offset: int64(at), Length: int64(len(ins))}, nil
}

// entries are the plain text entries of a PNG, in a fixed order; empty fields are left out.
func (p Provenance) entries() [][2]string {
	all := [][2]string{
		{"Description", p.Prompt}, {"Software", "kontextq"}, {"Source", p.Model},
		{"kie:taskId", p.TaskID}, {"kontextq:jobId", p.JobID}, {"kontextq:batch", p.Batch},
		{"kontextq:request", string(p.Request)}, {"DigitalSourceType", DigitalSourceType},
	}
	var out [][2]string
	for _, kv := range all {
		if kv[1] != "" {
			out = append(out, kv)
		}
	}
	return out
}

// pngITXt appends an uncompressed iTXt chunk (no language tag) to b.
func pngITXt(b []byte, keyword, text string) []byte {
	data := make([]byte, 0, len(keyword)+5+len(text))
	data = append(append(data, keyword...), 0, 0, 0, 0, 0)
	data = append(data, text...)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	b = append(b, n[:]...)
	start := len(b)
	b = append(append(b, "iTXt"...), data...)
	binary.BigEndian.PutUint32(n[:], crc32.ChecksumIEEE(b[start:]))
	return append(b, n[:]...)
}

// xmpPacket is p as an XMP packet: the IPTC digital source type, dc:description (the prompt)
// and the project's own properties, every value XML-escaped.
func xmpPacket(p Provenance) string {
	var b strings.Builder
	esc := func(s string) string {
		var e bytes.Buffer
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	b.WriteString("<?xpacket begin=\"\uFEFF\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n")
	b.WriteString(`<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">`)
	b.WriteString(`<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"` +
		` xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:kontextq="` + xmpNamespace + `">`)
	b.WriteString("<Iptc4xmpExt:DigitalSourceType>" + DigitalSourceType + "</Iptc4xmpExt:DigitalSourceType>")
	b.WriteString("<xmp:CreatorTool>kontextq</xmp:CreatorTool>")
	if p.Prompt != "" {
		b.WriteString(`<dc:description><rdf:Alt><rdf:li xml:lang="x-default">` + esc(p.Prompt) + "</rdf:li></rdf:Alt></dc:description>")
	}
	for _, kv := range [][2]string{{"prompt", p.Prompt}, {"model", p.Model}, {"kieTaskId", p.TaskID}, {"jobId", p.JobID}, {"batch", p.Batch}, {"request", string(p.Request)}} {
		if kv[1] != "" {
			b.WriteString("<kontextq:" + kv[0] + ">" + esc(kv[1]) + "</kontextq:" + kv[0] + ">")
		}
	}
	b.WriteString("</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end=\"w\"?>")
	return b.String()
}
