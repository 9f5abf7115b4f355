// Package imagetest makes pictures of known content for tests: an input photo whose edit must be
// drawn from it, checked by where its colours end up.
package imagetest

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"testing"
)

// Halves is a w x h PNG, red on the left half and blue on the right: an edit drawn from it keeps
// red on the left and blue on the right, whatever it adds.
func Halves(tb testing.TB, w, h int) []byte {
	tb.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.NRGBA{R: 230, G: 20, B: 20, A: 255}
			if x >= w/2 {
				c = color.NRGBA{R: 20, G: 20, B: 230, A: 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}
