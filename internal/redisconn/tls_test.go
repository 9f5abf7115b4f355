package redisconn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kontextq/kontextq/internal/redisconn"
	"github.com/kontextq/kontextq/internal/redistest"
	"github.com/kontextq/kontextq/jobs"
)

// rediss:// speaks TLS: the ledger works through it, and a certificate nobody vouches for is
// refused unless the URL says skip_verify=true.
func TestRedissSpeaksTLS(t *testing.T) {
	_, addr := redistest.StartTLS(t)
	ctx := context.Background()

	if rdb, err := redisconn.Open(ctx, "rediss://"+addr+"/0"); err == nil {
		rdb.Close()
		t.Fatal("a self-signed certificate was accepted without skip_verify")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("refused for another reason than the certificate: %v", err)
	}

	rdb, err := redisconn.Open(ctx, "rediss://"+addr+"/0?skip_verify=true")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if m := redisconn.ModeOf(rdb); m != redisconn.Single {
		t.Errorf("opened as %s", m)
	}
	l := jobs.NewLedger(rdb, jobs.LedgerOptions{Namespace: "kqtls"})
	if _, _, err := l.Create(ctx, &jobs.Spec{Batch: "b", ID: "j", Prompt: "a lantern"}, jobs.Bulk); err != nil {
		t.Fatal(err)
	}
	if c, err := l.Counts(ctx, "b"); err != nil || c.Queued != 1 {
		t.Errorf("counts over TLS: %+v, %v", c, err)
	}
}
