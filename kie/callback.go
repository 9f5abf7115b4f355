package kie

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Callback verification errors, for errors.Is. A callback failing any of them must be ignored
// (answered, but not acted on): polling remains the source of truth.
var (
	ErrCallbackMalformed = errors.New("malformed callback signature headers")
	ErrCallbackStale     = errors.New("callback timestamp outside the accepted window")
	ErrCallbackSignature = errors.New("callback signature mismatch")
)

// Headers carrying Kie's callback signature.
const (
	HeaderWebhookTimestamp = "X-Webhook-Timestamp"
	HeaderWebhookSignature = "X-Webhook-Signature"
)

// SignCallback signs a callback the way Kie does: timestamp is ts in unix seconds, signature is
// base64(HMAC-SHA256(key, taskID + "." + timestamp)). The simulator and tests use it.
func SignCallback(key []byte, taskID string, ts time.Time) (timestamp, signature string) {
	timestamp = strconv.FormatInt(ts.Unix(), 10)
	return timestamp, base64.StdEncoding.EncodeToString(callbackMAC(key, taskID, timestamp))
}

func callbackMAC(key []byte, taskID, timestamp string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(taskID))
	m.Write([]byte("."))
	m.Write([]byte(timestamp))
	return m.Sum(nil)
}

// VerifyCallback checks the signature headers of a callback for taskID. It rejects a missing or
// malformed timestamp or signature, a timestamp more than maxAge before or after now, and a
// signature that does not match (compared in constant time). The body is not signed: a verified
// callback proves only the taskID and the time. Errors never contain the key or the expected
// signature.
func VerifyCallback(key []byte, taskID, timestamp, signature string, now time.Time, maxAge time.Duration) error {
	if len(key) == 0 {
		return errors.New("kie: verify callback: no HMAC key configured")
	}
	if maxAge <= 0 {
		return fmt.Errorf("kie: verify callback: maxAge %s must be positive", maxAge)
	}
	if taskID == "" {
		return fmt.Errorf("kie: verify callback: %w: empty taskId", ErrCallbackMalformed)
	}
	// Digits only: ParseInt alone would also take "+17..." and "-1", which Kie never sends.
	if !isDigits(timestamp) || len(timestamp) > 12 {
		return fmt.Errorf("kie: verify callback: %w: timestamp %q is not unix seconds", ErrCallbackMalformed, truncate(timestamp, 40))
	}
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("kie: verify callback: %w: timestamp: %w", ErrCallbackMalformed, err)
	}
	got, err := base64.StdEncoding.Strict().DecodeString(signature)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("kie: verify callback: %w: signature is not a base64 HMAC-SHA256", ErrCallbackMalformed)
	}
	if !hmac.Equal(got, callbackMAC(key, taskID, timestamp)) {
		return fmt.Errorf("kie: verify callback: %w", ErrCallbackSignature)
	}
	age := now.Sub(time.Unix(secs, 0))
	if age > maxAge || age < -maxAge {
		return fmt.Errorf("kie: verify callback: %w: signed %s ago, limit %s", ErrCallbackStale, age.Round(time.Second), maxAge)
	}
	return nil
}
