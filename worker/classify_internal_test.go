package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/kontextq/kontextq/kie"
)

// notSent decides between submitting a job again (Kie certainly created no task) and failing it
// as interrupted (Kie may hold, and have billed, a task for it).
func TestNotSent(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"kie content policy", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 400}, true},
		{"kie rate limited as HTTP 429", &kie.Error{Op: "generate", HTTPStatus: 429, Code: 429}, true},
		{"kie server error in the body", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 500}, true},
		{"kie server error as HTTP 500", &kie.Error{Op: "generate", HTTPStatus: 500, Code: 500}, true},
		{"kie maintenance", &kie.Error{Op: "generate", HTTPStatus: 455, Code: 455}, true},
		{"cdn refusal", &kie.Error{Op: "generate", HTTPStatus: 403, Code: 403, Msg: "error code: 1010"}, true},
		{"no key, nothing sent", &kie.Error{Op: "generate", Code: 401}, true},
		{"wrapped kie refusal", fmt.Errorf("submitting: %w", &kie.Error{Op: "generate", HTTPStatus: 402, Code: 402}), true},
		{"2xx not understood", &kie.Error{Op: "generate", HTTPStatus: 200, Code: 0}, false},
		{"bad gateway", &kie.Error{Op: "generate", HTTPStatus: 502, Code: 502}, false},
		{"gateway timeout", &kie.Error{Op: "generate", HTTPStatus: 504, Code: 504}, false},
		{"cloudflare origin timeout", &kie.Error{Op: "generate", HTTPStatus: 524, Code: 524}, false},
		{"dial failed", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no route to host")}, true},
		{"connection refused", fmt.Errorf("post: %w", syscall.ECONNREFUSED), true},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}, false},
		{"deadline", context.DeadlineExceeded, false},
	} {
		if got := notSent(c.err); got != c.want {
			t.Errorf("%s: notSent = %t, want %t", c.name, got, c.want)
		}
	}
}
