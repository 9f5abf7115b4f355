package kiesim

import (
	"bytes"
	"crypto/sha256"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"

	xdraw "golang.org/x/image/draw"
)

// ratioDims scales a w:h ratio so its long side is maxSide pixels.
func ratioDims(ratio [2]int, maxSide int) (w, h int) {
	rw, rh := float64(ratio[0]), float64(ratio[1])
	if rw >= rh {
		w, h = maxSide, int(math.Round(float64(maxSide)*rh/rw))
	} else {
		w, h = int(math.Round(float64(maxSide)*rw/rh)), maxSide
	}
	return max(w, 1), max(h, 1)
}

// renderImage draws a gradient with diagonal stripes whose colours, stripe width and angle come
// from the task id: the same task always yields the same bytes (Go's encoders are
// deterministic) and two tasks practically never do.
func renderImage(taskID string, w, h int, format string) []byte {
	sum := sha256.Sum256([]byte(taskID))
	from := [3]float64{float64(sum[0]), float64(sum[1]), float64(sum[2])}
	to := [3]float64{float64(sum[3]), float64(sum[4]), float64(sum[5])}
	period := 4 + int(sum[6]%12)
	dx, dy := 1+int(sum[7]%3), 1+int(sum[8]%3)

	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			f := float64(x+y) / float64(w+h)
			shade := 1.0
			if ((x*dx+y*dy)/period)%2 == 0 {
				shade = 0.6
			}
			c := color.NRGBA{A: 255}
			c.R = uint8((from[0] + (to[0]-from[0])*f) * shade)
			c.G = uint8((from[1] + (to[1]-from[1])*f) * shade)
			c.B = uint8((from[2] + (to[2]-from[2])*f) * shade)
			img.SetNRGBA(x, y, c)
		}
	}
	return encode(img, format)
}

func imageMIME(format string) string {
	if format == "png" {
		return "image/png"
	}
	return "image/jpeg"
}

// renderEdit draws an edit of src: src cropped to the w:h ratio around its centre (as Kie crops
// an edit to a requested aspectRatio), scaled to w x h, posterised to four levels a channel,
// tinted with a colour from the task id, and marked with a frame and a corner badge in that
// colour. The input stays recognisable and the change is plain to see; the same task and input
// always give the same bytes.
func renderEdit(src image.Image, taskID string, w, h int, format string) []byte {
	sum := sha256.Sum256([]byte("edit/" + taskID))
	tint := color.NRGBA{R: 64 + sum[0]%192, G: 64 + sum[1]%192, B: 64 + sum[2]%192, A: 255}

	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	xdraw.ApproxBiLinear.Scale(img, img.Bounds(), src, coverCrop(src.Bounds(), w, h), xdraw.Src, nil)
	const keep = 0.6 // share of the posterised input in each pixel; the rest is the tint
	poster := func(v uint8) float64 { return float64(v/64) * 85 }
	mix := func(v, t uint8) uint8 { return uint8(math.Round(poster(v)*keep + float64(t)*(1-keep))) }
	for y := range h {
		for x := range w {
			i := img.PixOffset(x, y)
			p := img.Pix[i : i+4 : i+4]
			p[0], p[1], p[2], p[3] = mix(p[0], tint.R), mix(p[1], tint.G), mix(p[2], tint.B), 255
		}
	}
	frame := max(1, min(w, h)/40)
	badge := max(4, min(w, h)/6)
	for y := range h {
		for x := range w {
			onFrame := x < frame || y < frame || x >= w-frame || y >= h-frame
			inBadge := x >= w-frame-badge && y >= h-frame-badge
			switch {
			case onFrame:
				img.SetNRGBA(x, y, tint)
			case inBadge:
				// A white badge with a tinted diagonal: the simulator's mark.
				c := color.NRGBA{R: 255, G: 255, B: 255, A: 255}
				if d := (x - (w - frame - badge)) - (y - (h - frame - badge)); d >= -1 && d <= 1 {
					c = tint
				}
				img.SetNRGBA(x, y, c)
			}
		}
	}
	return encode(img, format)
}

// coverCrop is the largest rectangle of ratio w:h centred in b.
func coverCrop(b image.Rectangle, w, h int) image.Rectangle {
	bw, bh := b.Dx(), b.Dy()
	cw, ch := bw, bw*h/w
	if ch > bh {
		cw, ch = bh*w/h, bh
	}
	cw, ch = max(cw, 1), max(ch, 1)
	x0, y0 := b.Min.X+(bw-cw)/2, b.Min.Y+(bh-ch)/2
	return image.Rect(x0, y0, x0+cw, y0+ch)
}

func encode(img image.Image, format string) []byte {
	var buf bytes.Buffer
	if format == "png" {
		png.Encode(&buf, img) // writing to a bytes.Buffer cannot fail
	} else {
		jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	}
	return buf.Bytes()
}
