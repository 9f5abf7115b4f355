package kiesim

import (
	"maps"
	"time"
)

// AnswerKey counts answers per endpoint and Kie code (the body code, whatever the signal form;
// HTTP status for file downloads and the CDN's 403).
type AnswerKey struct {
	Endpoint string
	Code     int
}

// Stats are the simulator's counters, so tests assert what Kie would have seen and billed.
type Stats struct {
	Requests map[string]int    // requests received per endpoint (Endpoint* names)
	Answers  map[AnswerKey]int // answers per endpoint and code

	Accepted int // generate calls that created a task
	// DuplicateSubmissions counts accepted generate calls whose request (callBackUrl left out,
	// key order and whitespace ignored) equals an earlier accepted one: each was billed again.
	DuplicateSubmissions int
	// LiveDuplicates counts the duplicates whose earlier twin had not failed when the copy
	// arrived (still generating or succeeded): paid twice for one image. Resubmitting after a
	// generation failure is not one; two identical jobs on purpose still are.
	LiveDuplicates int
	RateLimited    int // 429 answers, all endpoints
	// MaxInWindow is the most accepted generate calls seen in any sliding GenerateWindow, even
	// when the limit is disabled: how close a client came to the account's budget.
	MaxInWindow  int
	CreditsSpent float64

	ImagesServed       int // complete image bodies sent (result, origin and direct links)
	DownloadsTruncated int
	DownloadErrors     int
	Uploads            int // files stored by the upload endpoints

	// InputsRead counts edits whose input image was read; InputsFailed those whose input could
	// not be fetched or was not an image (each ended with successFlag 2, errorCode 400).
	InputsRead   int
	InputsFailed int

	CallbacksSent      int // delivery attempts, duplicates included
	CallbacksDelivered int // attempts answered with HTTP 200
}

func newStats() Stats {
	return Stats{Requests: map[string]int{}, Answers: map[AnswerKey]int{}}
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.counters
	st.Requests = maps.Clone(s.counters.Requests)
	st.Answers = maps.Clone(s.counters.Answers)
	return st
}

func (s *Sim) countRequest(ep string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters.Requests[ep]++
}

func (s *Sim) countAnswer(ep string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters.Answers[AnswerKey{ep, code}]++
	if code == 429 {
		s.counters.RateLimited++
	}
}

// window is a strict sliding-window log of accepted calls. An event at t counts until per has
// fully elapsed (now-t >= per), so no half-open interval [a, a+per) ever holds more than the
// limit, and two events exactly per apart are both admitted.
type window struct{ times []time.Time }

// count drops events that left the window ending at now and reports how many remain.
func (w *window) count(now time.Time, per time.Duration) int {
	cut := now.Add(-per)
	i := 0
	for i < len(w.times) && !w.times[i].After(cut) {
		i++
	}
	w.times = w.times[i:]
	return len(w.times)
}

func (w *window) add(t time.Time) { w.times = append(w.times, t) }
