package server_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIDescribesEveryRoute keeps docs/openapi.yaml and the server's routes in step, both
// ways: an undocumented route and a documented route the server does not have both fail.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	f := setup(t, fixtureOpts{})
	var registered []string
	for _, r := range f.srv.Routes() {
		m := strings.ToLower(r.Method)
		registered = append(registered, m+" "+r.Path)
		op, ok := doc.Paths[r.Path][m]
		if !ok {
			t.Errorf("%s %s is served but not described in docs/openapi.yaml", r.Method, r.Path)
			continue
		}
		if _, ok := op["responses"]; !ok {
			t.Errorf("%s %s: no responses described", r.Method, r.Path)
		}
	}
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options"}
	for p, ops := range doc.Paths {
		for m := range ops {
			if slices.Contains(methods, m) && !slices.Contains(registered, m+" "+p) {
				t.Errorf("docs/openapi.yaml describes %s %s, which the server does not serve", strings.ToUpper(m), p)
			}
		}
	}
}
