package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/kie"
)

// NewKie builds the Kie client cfg describes.
func NewKie(cfg config.Config) (*kie.Client, error) {
	c, err := kie.New(kie.Options{APIKey: cfg.KieAPIKey.Reveal(), BaseURL: cfg.KieBaseURL, UploadURL: cfg.KieUploadURL})
	if err != nil {
		return nil, configErr(err)
	}
	return c, nil
}

// CheckKieKey asks Kie for the account's credits once, so that a wrong key is reported at start,
// naming the setting, instead of as an account paused for minutes while the batch waits. Only a
// refused key is an error: Kie being slow or down is for the workers to ride out.
func CheckKieKey(ctx context.Context, kc *kie.Client, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	credits, err := kc.Credits(cctx)
	var ke *kie.Error
	switch {
	case errors.As(err, &ke) && ke.Code == kie.CodeUnauthorized:
		return configErr(fmt.Errorf("KIE_API_KEY (--kie-api-key): Kie.ai refused the key (%w); see https://kie.ai/api-key", err))
	case err != nil:
		log.Warn("could not check the Kie.ai key; going on", "err", err)
	case credits <= 0:
		log.Warn("the Kie.ai account has no credits: Kie refuses submissions until it is topped up", "credits", credits)
	}
	return nil
}
