package kiesim

import (
	"bytes"
	"crypto/sha256"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
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
	var buf bytes.Buffer
	if format == "png" {
		png.Encode(&buf, img) // writing to a bytes.Buffer cannot fail
	} else {
		jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	}
	return buf.Bytes()
}

func imageMIME(format string) string {
	if format == "png" {
		return "image/png"
	}
	return "image/jpeg"
}
