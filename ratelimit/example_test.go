package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/ratelimit"
)

// errBusy stands in for the worker's typed "come back later" error.
type errBusy struct{ after time.Duration }

func (e errBusy) Error() string { return fmt.Sprintf("rate limited: retry in %v", e.after) }

// A submit handler waits briefly for a token, and otherwise hands its job back to the queue
// with the delay the limiter gives; a 429 from Kie is reported so every worker slows down.
func Example_submitHandler() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	generate := ratelimit.New(rdb, ratelimit.Options{
		Name:    "generate",
		Account: "a1b2c3", // e.g. a hash of the API key, never the key itself
		Prefix:  "kontextq:",
		Rate:    ratelimit.Rate{Events: 20, Per: 10 * time.Second},
	})

	submit := func(ctx context.Context, call func() (status int, retryAfter time.Duration, err error)) error {
		ok, retry, err := generate.WaitAtMost(ctx, 5*time.Second)
		if err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		if !ok {
			return errBusy{retry}
		}
		status, retryAfter, err := call()
		if status == 429 {
			if terr := generate.Throttled(ctx, retryAfter); terr != nil {
				err = errors.Join(err, terr)
			}
			// Not a failure: the job comes back once the account's cool-down is over.
			return errors.Join(errBusy{time.Until(generate.Stats().CooldownUntil)}, err)
		}
		return err
	}
	_ = submit
}
