package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/kontextq/kontextq/jobs"
	"github.com/kontextq/kontextq/kie"
)

// maxCallbackBytes bounds a callback body; Kie's are a few hundred bytes.
const maxCallbackBytes = 64 << 10

// callback receives Kie's callbacks. Only the task id is used, and only to ask for an immediate
// poll: the body is not signed, so its URLs and codes are never trusted. Kie retries anything
// but a 200, so every callback that is not refused outright is answered 200 quickly, even for a
// task this deployment does not know.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCallbackBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, "callback body too large", nil)
			return
		}
		writeError(w, http.StatusBadRequest, "reading the callback body failed", nil)
		return
	}
	var cb kie.Callback
	if err := json.Unmarshal(body, &cb); err != nil || cb.Data.TaskID == "" {
		writeError(w, http.StatusBadRequest, "not a Kie callback: want JSON with data.taskId", nil)
		return
	}
	task := cb.Data.TaskID
	ts, sig := r.Header.Get(kie.HeaderWebhookTimestamp), r.Header.Get(kie.HeaderWebhookSignature)
	signed := ts != "" || sig != ""
	switch {
	case signed && len(s.o.HMACKey) > 0:
		if err := kie.VerifyCallback(s.o.HMACKey, task, ts, sig, s.o.Now(), s.o.CallbackWindow); err != nil {
			s.log.Warn("callback refused", "task", task, "remote", r.RemoteAddr, "err", err)
			s.o.Metrics.callback(callbackOutcome(err))
			writeError(w, http.StatusUnauthorized, "callback signature refused", nil)
			return
		}
		// A verified callback may be replayed verbatim within the window; each replay would
		// cost a status call. The signature names the task and second, so it is the key.
		first, err := s.firstDelivery(r.Context(), task, ts)
		if err != nil {
			s.log.Error("callback replay check", "task", task, "err", err)
			writeError(w, http.StatusServiceUnavailable, "temporarily unavailable", nil)
			return
		}
		if !first {
			s.o.Metrics.callback("duplicate")
			writeJSON(w, http.StatusOK, map[string]string{"status": "duplicate"})
			return
		}
	case s.o.AllowUnsigned:
		// Unsigned, or signed while no key is configured: it proves nothing, and a poll is all
		// it can cause.
	default:
		why := "unsigned callbacks are not accepted (set KIE_WEBHOOK_HMAC_KEY and have Kie sign them, or start serve with --allow-unsigned-callbacks)"
		switch {
		case signed:
			why = "signed callback but no HMAC key is configured (set KIE_WEBHOOK_HMAC_KEY)"
		case len(s.o.HMACKey) > 0:
			why = "unsigned callback refused: KIE_WEBHOOK_HMAC_KEY is set, so a callback must carry Kie's " +
				kie.HeaderWebhookTimestamp + " and " + kie.HeaderWebhookSignature + " headers"
		}
		s.log.Warn("callback refused", "task", task, "remote", r.RemoteAddr, "why", why)
		s.o.Metrics.callback("unsigned")
		writeError(w, http.StatusUnauthorized, why, nil)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ref, err := s.ledger.JobForTask(ctx, task)
	if errors.Is(err, jobs.ErrNotFound) {
		// Another deployment's task, or one already finished by polling.
		s.log.Debug("callback for a task not in flight", "task", task)
		s.o.Metrics.callback("unknown_task")
		writeJSON(w, http.StatusOK, map[string]string{"status": "ignored"})
		return
	}
	if err == nil {
		err = s.o.Checker.Check(ctx, ref)
	}
	if err != nil {
		if signed && len(s.o.HMACKey) > 0 {
			s.forgetDelivery(task, ts) // so that Kie's retry of this very delivery is not a "duplicate"
		}
		// Not a 200, so Kie tries again later; polling covers the job meanwhile.
		s.log.Error("callback: scheduling a check", "task", task, "err", err)
		writeError(w, http.StatusServiceUnavailable, "temporarily unavailable", nil)
		return
	}
	s.log.Debug("callback: check scheduled", "task", task, "job", ref.String(), "code", cb.Code)
	s.o.Metrics.callback("accepted")
	writeJSON(w, http.StatusOK, map[string]string{"status": "accepted"})
}

func callbackOutcome(err error) string {
	switch {
	case errors.Is(err, kie.ErrCallbackStale):
		return "stale"
	case errors.Is(err, kie.ErrCallbackSignature):
		return "forged"
	}
	return "malformed"
}

// firstDelivery records a verified (task, timestamp) pair and reports whether it is new. The
// record outlives the window on both sides, after which the timestamp check refuses a replay.
func (s *Server) firstDelivery(ctx context.Context, task, ts string) (bool, error) {
	return s.o.Redis.SetNX(ctx, s.deliveryKey(task, ts), 1, 2*s.o.CallbackWindow+time.Minute).Result()
}

func (s *Server) forgetDelivery(task, ts string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.o.Redis.Del(ctx, s.deliveryKey(task, ts)).Err()
}

func (s *Server) deliveryKey(task, ts string) string {
	sum := sha256.Sum256([]byte(task + "." + ts))
	return s.o.Namespace + ":callback:" + hex.EncodeToString(sum[:16])
}
