package kiesim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// delivery is one pending callback attempt, due at a time on the simulator's clock. Each has a
// real timer armed for the remaining time; when it fires early (the clock is a test's and has
// not moved), it re-arms. Tests that move their clock call DeliverDueCallbacks instead of
// waiting.
type delivery struct {
	task    *task
	attempt int // 0 for the first delivery, i for the i-th retry
	due     time.Time
	timer   *time.Timer
}

func (s *Sim) scheduleLocked(d *delivery) {
	if s.closed {
		return
	}
	s.pending[d] = struct{}{}
	// The timer cannot run fire before d.timer is set: fire takes s.mu, which is held here.
	d.timer = time.AfterFunc(max(d.due.Sub(s.nowLocked()), 0), func() { s.fire(d) })
}

func (s *Sim) fire(d *delivery) {
	s.mu.Lock()
	if _, pending := s.pending[d]; !pending {
		s.mu.Unlock()
		return
	}
	if now := s.nowLocked(); now.Before(d.due) {
		d.timer.Reset(d.due.Sub(now))
		s.mu.Unlock()
		return
	}
	delete(s.pending, d)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.deliver(d)
}

// DeliverDueCallbacks sends every callback (first delivery or retry) that is due at the
// simulator's now, waits for the answers, and reports how many deliveries it made. Retries
// that follow are scheduled, not sent.
func (s *Sim) DeliverDueCallbacks() int {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0
	}
	now := s.nowLocked()
	var due []*delivery
	for d := range s.pending {
		if !now.Before(d.due) {
			d.timer.Stop()
			delete(s.pending, d)
			due = append(due, d)
		}
	}
	s.wg.Add(len(due))
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range due {
		wg.Go(func() {
			defer s.wg.Done()
			s.deliver(d)
		})
	}
	wg.Wait()
	return len(due)
}

// PendingCallbacks is the number of callback deliveries scheduled and not yet made.
func (s *Sim) PendingCallbacks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

type callbackBody struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	Data struct {
		TaskID string `json:"taskId"`
		Info   struct {
			OriginImageURL string `json:"originImageUrl"`
			ResultImageURL string `json:"resultImageUrl"`
		} `json:"info"`
	} `json:"data"`
}

// deliver makes one attempt (and its duplicate, when the task has one), then schedules the
// next retry on failure.
func (s *Sim) deliver(d *delivery) {
	t := d.task
	s.waitInput(t) // an edit's outcome is known once its input has been read
	s.mu.Lock()
	var cb callbackBody
	cb.Data.TaskID = t.id
	if t.flag == 1 {
		cb.Code, cb.Msg = 200, "success"
		cb.Data.Info.ResultImageURL = t.base + t.resultPath()
		cb.Data.Info.OriginImageURL = t.base + t.originPath()
	} else {
		cb.Code, cb.Msg = t.errCode, t.errMsg
	}
	key := append([]byte(nil), s.o.CallbackHMACKey...)
	timeout := s.o.CallbackTimeout
	now := s.nowLocked()
	s.mu.Unlock()

	body, _ := json.Marshal(cb) // a struct of strings and ints always encodes
	send := func() bool {
		s.mu.Lock()
		s.counters.CallbacksSent++
		t.cbSent++
		s.mu.Unlock()
		ok := s.post(t.cbURL, body, key, t.id, now.Unix(), timeout)
		if ok {
			s.mu.Lock()
			s.counters.CallbacksDelivered++
			t.cbDelivered++
			s.mu.Unlock()
		}
		return ok
	}
	if send() {
		if t.cbDup {
			send()
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.attempt < len(s.o.CallbackRetryDelays) {
		s.scheduleLocked(&delivery{task: t, attempt: d.attempt + 1, due: s.nowLocked().Add(s.o.CallbackRetryDelays[d.attempt])})
	}
}

// post sends one callback and reports whether it was answered with HTTP 200 in time.
func (s *Sim) post(target string, body, key []byte, taskID string, unix int64, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiesim-callback/1")
	if len(key) > 0 {
		ts := strconv.FormatInt(unix, 10)
		req.Header.Set("X-Webhook-Timestamp", ts)
		req.Header.Set("X-Webhook-Signature", Sign(key, taskID, ts))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Sign is Kie's callback signature: base64(HMAC-SHA256(key, taskId + "." + timestamp)).
// Tests of a verifier use it to forge valid and invalid callbacks.
func Sign(key []byte, taskID, timestamp string) string {
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, taskID+"."+timestamp)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
