package kiesim

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/kontextq/kontextq/kie"
)

// task is one accepted generate call. Its outcome and completion time are fixed at creation;
// what a poll sees is derived from the clock (generating until completeAt).
type task struct {
	id         string
	req        genRequest
	paramJSON  string
	base       string // origin for its file URLs, as seen by the submitting client
	format     string
	width      int
	height     int
	maxSide    int // Options.ImageMaxSide when created
	price      float64
	created    time.Time
	completeAt time.Time

	flag    int // final successFlag: 1, 2 or 3
	errCode int
	errMsg  string

	timeoutPending bool
	cbURL          string
	cbDrop, cbDup  bool
	cbSent         int
	cbDelivered    int

	// An edit waits for its input (inputDone is closed when it has been read); its image is
	// rendered then and kept in edited.
	inputPending bool
	inputDone    chan struct{}
	edited       []byte

	polls  int
	served int
	sum    string // hex sha256 of the image bytes, once computed
	size   int
}

func (t *task) flagAt(now time.Time) int {
	if t.inputPending || now.Before(t.completeAt) {
		return 0
	}
	return t.flag
}

func (t *task) ext() string {
	if t.format == "png" {
		return "png"
	}
	return "jpg"
}

func (t *task) resultPath() string { return "/files/result/" + t.id + "." + t.ext() }
func (t *task) originPath() string { return "/files/origin/" + t.id + "." + t.ext() }

// TaskInfo is what the simulator knows about a task, for tests to compare with what a client
// recorded and archived.
type TaskInfo struct {
	TaskID    string
	Request   kie.GenerateRequest // as received (empty strings read as not sent)
	ParamJSON string              // the body as record-info reports it
	IsEdit    bool

	Model        string // effective values, defaults applied
	OutputFormat string
	Width        int
	Height       int
	Price        float64

	CreateTime   time.Time
	CompleteTime time.Time       // when it finishes (or finished)
	Outcome      kie.SuccessFlag // the final state, decided at creation
	SuccessFlag  kie.SuccessFlag // the state at the simulator's now
	ErrorCode    int             // 0, 400, 500 or 501
	ErrorMessage string

	ResultURL string // set for a successful task
	OriginURL string
	// ImageSHA256 (hex) and ImageSize describe the exact bytes served for a successful task
	// (the same for every download of it).
	ImageSHA256  string
	ImageSize    int
	ImagesServed int // complete downloads of its result, origin or direct links
	Polls        int // record-info calls answered for it

	CallbackURL        string
	CallbackDropped    bool // the callback will never be sent
	CallbackDuplicated bool // a delivered callback is sent twice
	CallbacksSent      int
	CallbacksDelivered int
}

// Task returns what the simulator knows about taskID. For an edit it first waits until the
// input image has been read (at most Options.FetchTimeout), so the outcome it reports is final.
func (s *Sim) Task(taskID string) (TaskInfo, bool) {
	s.mu.Lock()
	t, found := s.tasks[taskID]
	s.mu.Unlock()
	if !found {
		return TaskInfo{}, false
	}
	return s.info(t, true), true
}

// Tasks returns every task in creation order, once every edit's input has been read. To stay cheap with many tasks it renders no
// images: ImageSHA256 is set only for tasks whose image was served or looked up with Task.
func (s *Sim) Tasks() []TaskInfo {
	s.mu.Lock()
	order := append([]*task(nil), s.order...)
	s.mu.Unlock()
	out := make([]TaskInfo, len(order))
	for i, t := range order {
		out[i] = s.info(t, false)
	}
	return out
}

func (s *Sim) info(t *task, render bool) TaskInfo {
	s.waitInput(t)
	if render && t.flag == 1 {
		s.imageOf(t) // fills sum and size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ti := TaskInfo{
		TaskID:             t.id,
		Request:            t.req.kieRequest(),
		ParamJSON:          t.paramJSON,
		IsEdit:             t.req.isEdit(),
		Model:              t.req.model(),
		OutputFormat:       t.format,
		Width:              t.width,
		Height:             t.height,
		Price:              t.price,
		CreateTime:         t.created,
		CompleteTime:       t.completeAt,
		Outcome:            kie.SuccessFlag(t.flag),
		SuccessFlag:        kie.SuccessFlag(t.flagAt(s.nowLocked())),
		ErrorCode:          t.errCode,
		ErrorMessage:       t.errMsg,
		ImageSHA256:        t.sum,
		ImageSize:          t.size,
		ImagesServed:       t.served,
		Polls:              t.polls,
		CallbackURL:        t.cbURL,
		CallbackDropped:    t.cbURL != "" && t.cbDrop,
		CallbackDuplicated: t.cbURL != "" && t.cbDup,
		CallbacksSent:      t.cbSent,
		CallbacksDelivered: t.cbDelivered,
	}
	if t.flag == 1 {
		ti.ResultURL = t.base + t.resultPath()
		ti.OriginURL = t.base + t.originPath()
	}
	return ti
}

// imageOf renders t's image. Rendering a generation is deterministic, so its bytes are not kept:
// the simulator can hold many thousands of tasks without holding their images. An edit's image
// was rendered from its input when that was read.
func (s *Sim) imageOf(t *task) []byte {
	b := t.edited
	if b == nil {
		b = renderImage(t.id, t.width, t.height, t.format)
	}
	s.mu.Lock()
	if t.sum == "" {
		sum := sha256.Sum256(b)
		t.sum, t.size = hex.EncodeToString(sum[:]), len(b)
	}
	s.mu.Unlock()
	return b
}
