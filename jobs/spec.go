package jobs

import "github.com/kontextq/kontextq/kie"

// Spec is one job: the Kie generate request fields (Kie's own names) plus the job id and batch.
// A Spec with InputImage set is an edit; otherwise it is a generation.
type Spec struct {
	ID    string `json:"id,omitempty"`
	Batch string `json:"batch,omitempty"`

	Prompt            string `json:"prompt"`
	InputImage        string `json:"inputImage,omitempty"` // http(s) URL, or a local file path (absolute once loaded)
	AspectRatio       string `json:"aspectRatio,omitempty"`
	Model             string `json:"model,omitempty"`
	OutputFormat      string `json:"outputFormat,omitempty"`
	PromptUpsampling  *bool  `json:"promptUpsampling,omitempty"`
	SafetyTolerance   *int   `json:"safetyTolerance,omitempty"`
	EnableTranslation *bool  `json:"enableTranslation,omitempty"`
	Watermark         string `json:"watermark,omitempty"`
	UploadCn          *bool  `json:"uploadCn,omitempty"`

	// Where the job came from and what its archived image is called: kept in the ledger beside
	// the request, never sent to Kie.
	File string `json:"-"` // the job file it was loaded from; "" for jobs enqueued by the API or an Enqueuer
	Line int    `json:"-"` // the 1-based line of File it starts on
	Name string `json:"-"` // the archived image's base name; "" means the id (see NameTemplate)
}

// DefaultModel is the model Kie uses for a request that names none.
const DefaultModel = defaultModel

// FileName is the base name of the job's archived files: its Name, or its id.
func (s *Spec) FileName() string {
	if s.Name != "" {
		return s.Name
	}
	return s.ID
}

// IsEdit reports whether the job edits an input image.
func (s *Spec) IsEdit() bool { return s.InputImage != "" }

// Request is the generate request for s. inputImage is the URL Kie will fetch: s.InputImage
// itself for a URL, the upload's download URL for a local file.
func (s *Spec) Request(inputImage, callBackURL string) kie.GenerateRequest {
	return kie.GenerateRequest{
		Prompt:            s.Prompt,
		EnableTranslation: s.EnableTranslation,
		UploadCn:          s.UploadCn,
		InputImage:        inputImage,
		AspectRatio:       s.AspectRatio,
		OutputFormat:      s.OutputFormat,
		PromptUpsampling:  s.PromptUpsampling,
		Model:             s.Model,
		CallBackURL:       callBackURL,
		SafetyTolerance:   s.SafetyTolerance,
		Watermark:         s.Watermark,
	}
}

// Format is the image format the job produces: Kie's default is jpeg.
func (s *Spec) Format() string {
	if s.OutputFormat == "" {
		return "jpeg"
	}
	return s.OutputFormat
}
