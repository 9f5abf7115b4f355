package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kontextq/kontextq/config"
)

func TestResultTTLAndArchiveOrigin(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		ttl     time.Duration
		origin  bool
		wantErr string
	}{
		{name: "defaults", ttl: 24 * time.Hour},
		{name: "flag alone", args: []string{"--archive-origin"}, ttl: 24 * time.Hour, origin: true},
		{name: "flag false", args: []string{"--archive-origin=false"}, env: map[string]string{"KONTEXTQ_ARCHIVE_ORIGIN": "true"}, ttl: 24 * time.Hour},
		{name: "environment", env: map[string]string{"KONTEXTQ_ARCHIVE_ORIGIN": "1", "KONTEXTQ_RESULT_TTL": "336h"}, ttl: 336 * time.Hour, origin: true},
		{name: "not a bool", env: map[string]string{"KONTEXTQ_ARCHIVE_ORIGIN": "maybe"}, wantErr: `KONTEXTQ_ARCHIVE_ORIGIN: "maybe" is not true or false`},
		{name: "not positive", args: []string{"--result-ttl=0s"}, wantErr: "--result-ttl: 0s is not a positive duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("kontextq", pflag.ContinueOnError)
			config.RegisterFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(fs, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ResultTTL != tc.ttl || cfg.ArchiveOrigin != tc.origin {
				t.Errorf("result-ttl %s, archive-origin %t; want %s, %t", cfg.ResultTTL, cfg.ArchiveOrigin, tc.ttl, tc.origin)
			}
		})
	}
}
