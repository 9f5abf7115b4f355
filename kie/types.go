package kie

import "time"

// GenerateRequest is the body of POST /api/v1/flux/kontext/generate, with Kie's field names.
// Optional fields are pointers or empty strings so that "not sent" differs from a zero value:
// for edits an omitted aspectRatio means "keep the input's ratio".
type GenerateRequest struct {
	Prompt            string `json:"prompt"`
	EnableTranslation *bool  `json:"enableTranslation,omitempty"`
	UploadCn          *bool  `json:"uploadCn,omitempty"`
	InputImage        string `json:"inputImage,omitempty"`
	AspectRatio       string `json:"aspectRatio,omitempty"`
	OutputFormat      string `json:"outputFormat,omitempty"`
	PromptUpsampling  *bool  `json:"promptUpsampling,omitempty"`
	Model             string `json:"model,omitempty"`
	CallBackURL       string `json:"callBackUrl,omitempty"`
	SafetyTolerance   *int   `json:"safetyTolerance,omitempty"`
	Watermark         string `json:"watermark,omitempty"`
}

// SuccessFlag is record-info's task state.
type SuccessFlag int

const (
	Generating       SuccessFlag = 0 // still running
	Succeeded        SuccessFlag = 1 // result URLs are set
	CreateFailed     SuccessFlag = 2 // the task could not be created
	GenerationFailed SuccessFlag = 3 // generation failed (a new submission is a new paid task)
)

// Record is a decoded record-info answer. Times Kie left out are zero; absent URLs are "".
type Record struct {
	TaskID         string
	ParamJSON      string // the original request, as the JSON string Kie returns
	CreateTime     time.Time
	CompleteTime   time.Time
	ResultImageURL string
	OriginImageURL string
	SuccessFlag    SuccessFlag
	ErrorCode      int // 0 when absent or null
	ErrorMessage   string
}

// UploadedFile is the data of a successful file upload; DownloadURL goes into inputImage.
type UploadedFile struct {
	FileName    string
	FilePath    string
	DownloadURL string
	FileSize    int64
	MimeType    string
	UploadedAt  time.Time
}

// Callback is the body Kie POSTs to a callBackUrl. Note data.info, not data.response. The body
// is not signed: only TaskID is trustworthy, and only after VerifyCallback.
type Callback struct {
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
