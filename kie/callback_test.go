package kie_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kontextq/kontextq/kie"
)

var hmacKey = []byte("whsec-test-key")

func TestSignCallbackMatchesKiesScheme(t *testing.T) {
	// Computed independently: printf 'task-abc.1748772000' | openssl dgst -sha256 -hmac whsec-test-key -binary | base64
	ts, sig := kie.SignCallback(hmacKey, "task-abc", time.Unix(1748772000, 0))
	if ts != "1748772000" || sig != "g98CzXA7nPTH49GtovN+H7l4kcX3gN9Ok0Lvr5Aw66M=" {
		t.Errorf("SignCallback = %s, %s", ts, sig)
	}
}

func TestVerifyCallback(t *testing.T) {
	now := time.Unix(1748772000, 0)
	maxAge := 5 * time.Minute
	ts, sig := kie.SignCallback(hmacKey, "task-abc", now)
	oldTS, oldSig := kie.SignCallback(hmacKey, "task-abc", now.Add(-maxAge-time.Second))
	edgeTS, edgeSig := kie.SignCallback(hmacKey, "task-abc", now.Add(-maxAge))
	futTS, futSig := kie.SignCallback(hmacKey, "task-abc", now.Add(maxAge+time.Second))
	nearTS, nearSig := kie.SignCallback(hmacKey, "task-abc", now.Add(maxAge-time.Second))
	raw, _ := base64.StdEncoding.DecodeString(sig)
	flipped := append([]byte{}, raw...)
	flipped[0] ^= 1

	tests := []struct {
		name          string
		key           []byte
		task, ts, sig string
		want          error // nil: accepted
	}{
		{"valid", hmacKey, "task-abc", ts, sig, nil},
		{"exactly maxAge old", hmacKey, "task-abc", edgeTS, edgeSig, nil},
		{"slightly in the future", hmacKey, "task-abc", nearTS, nearSig, nil},
		{"stale", hmacKey, "task-abc", oldTS, oldSig, kie.ErrCallbackStale},
		{"too far in the future", hmacKey, "task-abc", futTS, futSig, kie.ErrCallbackStale},
		{"other task", hmacKey, "task-xyz", ts, sig, kie.ErrCallbackSignature},
		{"other key", []byte("another-key"), "task-abc", ts, sig, kie.ErrCallbackSignature},
		{"flipped bit", hmacKey, "task-abc", ts, base64.StdEncoding.EncodeToString(flipped), kie.ErrCallbackSignature},
		{"timestamp moved", hmacKey, "task-abc", "1748772001", sig, kie.ErrCallbackSignature},
		{"empty signature", hmacKey, "task-abc", ts, "", kie.ErrCallbackMalformed},
		{"not base64", hmacKey, "task-abc", ts, "not*base64!", kie.ErrCallbackMalformed},
		{"short signature", hmacKey, "task-abc", ts, base64.StdEncoding.EncodeToString(raw[:16]), kie.ErrCallbackMalformed},
		{"hex signature", hmacKey, "task-abc", ts, "83df02cd703b9cf4c7e3d1ada2f37e1fb97891c5f780df4e9342efaf9030eba3", kie.ErrCallbackMalformed},
		{"empty timestamp", hmacKey, "task-abc", "", sig, kie.ErrCallbackMalformed},
		{"signed timestamp", hmacKey, "task-abc", "+" + ts, sig, kie.ErrCallbackMalformed},
		{"milliseconds", hmacKey, "task-abc", ts + "000", sig, kie.ErrCallbackMalformed},
		{"timestamp with space", hmacKey, "task-abc", ts + " ", sig, kie.ErrCallbackMalformed},
		{"empty task", hmacKey, "", ts, sig, kie.ErrCallbackMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kie.VerifyCallback(tt.key, tt.task, tt.ts, tt.sig, now, maxAge)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyCallback rejected a valid callback: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyCallback = %v, want %v", err, tt.want)
			}
			for _, secret := range []string{string(hmacKey), sig} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals the key or the expected signature", err)
				}
			}
		})
	}
}

func TestVerifyCallbackNeedsAKeyAndAWindow(t *testing.T) {
	now := time.Unix(1748772000, 0)
	ts, sig := kie.SignCallback(nil, "t", now)
	if err := kie.VerifyCallback(nil, "t", ts, sig, now, time.Minute); err == nil {
		t.Error("an empty key verified a callback signed with an empty key")
	}
	ts, sig = kie.SignCallback(hmacKey, "t", now)
	if err := kie.VerifyCallback(hmacKey, "t", ts, sig, now, 0); err == nil {
		t.Error("maxAge 0 accepted a callback")
	}
}
