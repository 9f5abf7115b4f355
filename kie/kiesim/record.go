package kiesim

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// recordInfo is GET /api/v1/flux/kontext/record-info?taskId=. It has its own rate window; a
// call inside the budget counts whatever it answers.
func (s *Sim) recordInfo(r *http.Request, _ []byte) answer {
	id := r.URL.Query().Get("taskId")
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	if s.o.RecordInfoLimit >= 0 && s.recWin.count(now, s.o.RecordInfoWindow) >= s.o.RecordInfoLimit {
		return fail(429, fmt.Sprintf("Rate limit exceeded: at most %d requests per %s", s.o.RecordInfoLimit, s.o.RecordInfoWindow))
	}
	s.recWin.add(now)
	if id == "" {
		return fail(422, "taskId is required")
	}
	t := s.tasks[id]
	if t == nil {
		return fail(404, "Task not found")
	}
	t.polls++
	flag := t.flagAt(now)
	if flag != 0 && t.timeoutPending {
		t.timeoutPending = false
		return fail(408, "The upstream service did not return a result in time")
	}
	variant := -1
	if s.o.Quirks {
		variant = int(s.streams["quirk"] % 12)
		s.streams["quirk"]++
	}
	return success(recordData(t, flag, variant))
}

// recordData builds record-info's data for t in state flag. variant -1 is the documented form;
// 0..11 rotate through the drift KIE-API.md lists, so that within twelve answers every time
// format (3), errorCode form (2 per case) and absent-URL form (3) has appeared, even to a
// client that alternates between two tasks.
func recordData(t *task, flag, variant int) map[string]any {
	timeForm, codeForm, urlForm := 0, 0, 0
	if variant >= 0 {
		timeForm, codeForm, urlForm = variant%3, (variant/3)%2, (variant/2)%3
	}
	d := map[string]any{
		"taskId":       t.id,
		"paramJson":    t.paramJSON,
		"createTime":   formatTime(t.created, timeForm),
		"successFlag":  flag,
		"completeTime": nil,
		"errorCode":    nil,
		"errorMessage": "",
	}
	if flag != 0 {
		d["completeTime"] = formatTime(t.completeAt, timeForm)
	} else if variant >= 0 && codeForm == 1 {
		delete(d, "completeTime")
	}

	switch {
	case flag == 1:
		d["response"] = map[string]any{
			"resultImageUrl": t.base + t.resultPath(),
			"originImageUrl": t.base + t.originPath(),
		}
	case urlForm == 2:
		d["response"] = nil
	default:
		absent := ""
		if urlForm == 1 {
			absent = "null"
		}
		d["response"] = map[string]any{"resultImageUrl": absent, "originImageUrl": absent}
	}

	hasError := flag >= 2 && t.errCode != 0
	switch {
	case hasError && codeForm == 1:
		d["errorCode"] = strconv.Itoa(t.errCode)
	case hasError:
		d["errorCode"] = t.errCode
	case variant >= 0 && codeForm == 1:
		d["errorCode"] = "null"
		d["errorMessage"] = nil
	}
	if hasError {
		d["errorMessage"] = t.errMsg
	}

	if variant >= 0 {
		progress := "0.00"
		if flag != 0 {
			progress = "1.00"
		}
		d["progress"] = progress
		d["operationType"] = map[bool]string{true: "edit", false: "generate"}[t.req.isEdit()]
		d["source"] = "api"
		d["extra"] = map[string]any{"queue": variant, "region": "us"}
	}
	return d
}

// formatTime writes t in one of the forms Kie has been seen to use: RFC 3339, a zone-less
// "2006-01-02 15:04:05" in UTC, or epoch milliseconds as a number.
func formatTime(t time.Time, form int) any {
	switch form {
	case 1:
		return t.UTC().Format(time.DateTime)
	case 2:
		return t.UnixMilli()
	default:
		return t.UTC().Format(time.RFC3339)
	}
}

// creditUnlimited is what the credit endpoint reports for an unlimited balance before anything
// is billed: JSON has no infinity.
const creditUnlimited = 1e9

// credit is GET /api/v1/chat/credit. An unlimited balance still goes down by every bill, as a
// real one does, so a client can measure prices by it.
func (s *Sim) credit(*http.Request, []byte) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.credits
	if math.IsInf(c, 1) {
		c = creditUnlimited - s.counters.CreditsSpent
	}
	return success(c)
}
