package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Name: "generate", Account: "a1", Rate: Rate{20, 10 * time.Second}}
	tests := []struct {
		name   string
		change func(*Options)
		want   []string // fields named in the error; none: valid
	}{
		{"valid", func(*Options) {}, nil},
		{"no name", func(o *Options) { o.Name = "" }, []string{"Name"}},
		{"no account", func(o *Options) { o.Account = "" }, []string{"Account"}},
		{"brace in account", func(o *Options) { o.Account = "a{1}" }, []string{"Account"}},
		{"zero rate", func(o *Options) { o.Rate = Rate{} }, []string{"Rate"}},
		{"margin too large", func(o *Options) { o.Margin = 0.5 }, []string{"Margin"}},
		{"negative margin", func(o *Options) { o.Margin = -0.1 }, []string{"Margin"}},
		{"min rate above 1", func(o *Options) { o.MinRate = 2 }, []string{"MinRate"}},
		{"everything at once", func(o *Options) { *o = Options{MaxReserve: -1} },
			[]string{"Name", "Account", "Rate", "MaxReserve"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.change(&o)
			err := o.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", o)
			}
			for _, f := range tc.want {
				if !strings.Contains(err.Error(), "Options."+f+":") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
}

func TestNewPanicsOnInvalidOptions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted options without a name, account or rate")
		}
	}()
	New(nil, Options{})
}
