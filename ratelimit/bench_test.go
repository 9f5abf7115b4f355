package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kontextq/kontextq/internal/redistest"
)

// BenchmarkAllow measures Allow against the same server's PING, measured in the same run:
// "x-ping" is Allow's cost in PING round trips. A grant is one EVALSHA; a denial the local
// pacer can decide costs no round trip at all.
func BenchmarkAllow(b *testing.B) {
	env := redistest.New(b)
	ctx := context.Background()
	const pings = 2000
	start := time.Now()
	for range pings {
		if err := env.Client.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	ping := float64(time.Since(start)) / pings
	runs := 0

	b.Run("granted", func(b *testing.B) {
		// A rate no caller can reach: every Allow goes to Redis and is granted.
		l := New(env.Client, Options{Name: "bench-granted", Account: "a", Prefix: env.Prefix,
			Rate: Rate{1_000_000, time.Second}})
		b.ResetTimer()
		for range b.N {
			if res, err := allow(ctx, l); err != nil || !res.Allowed {
				b.Fatalf("Allow: %+v, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/ping, "x-ping")
	})
	b.Run("denied-locally", func(b *testing.B) {
		// The benchmark body runs several times: each run is its own account.
		runs++
		l := New(env.Client, Options{Name: "bench-denied", Account: fmt.Sprint("a", runs), Prefix: env.Prefix,
			Rate: Rate{1, time.Hour}})
		if res, err := allow(ctx, l); err != nil || !res.Allowed {
			b.Fatalf("first Allow: %+v, %v", res, err)
		}
		b.ResetTimer()
		for range b.N {
			if res, _ := allow(ctx, l); res.Allowed {
				b.Fatal("granted twice in an hour")
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/ping, "x-ping")
		if trips := l.Stats().RoundTrips; trips != 1 {
			b.Errorf("%d round trips, want 1", trips)
		}
	})
}
