package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// TestOpenAPILint runs Spectral (spectral:oas and the OWASP API Security
// ruleset, pinned in api/lint) on the served OpenAPI document and wants no
// error and no warning (docs/api.md, "Lint"). Without api/lint/node_modules
// it fails under SWEEPER_REQUIRE_DB=1 (make test) and skips otherwise.
func TestOpenAPILint(t *testing.T) {
	t.Parallel()
	spectral, err := filepath.Abs(filepath.Join("lint", "node_modules", ".bin", "spectral"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spectral); err != nil {
		msg := "Spectral is not installed: run `npm ci --prefix api/lint` (needs node and npm)"
		if os.Getenv(testdb.EnvRequireDB) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("api/lint has Spectral but node is not on PATH: %v", err)
	}

	e := newEnv(t, api.Options{})
	r := e.do("reader", "GET", "/v1/openapi.json", nil)
	if r.Code != 200 {
		t.Fatalf("openapi.json: %d", r.Code)
	}
	doc := filepath.Join(t.TempDir(), "openapi.json")
	if err := os.WriteFile(doc, r.Body, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(spectral, "lint", "--ruleset", filepath.Join("lint", ".spectral.yaml"), "--format", "json", "--quiet", doc)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("spectral: %v\n%s", err, stderr.String())
	}
	var results []struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Severity int    `json:"severity"` // 0 error, 1 warning, 2 info, 3 hint
		Path     []any  `json:"path"`
	}
	if err := json.Unmarshal(out, &results); err != nil {
		t.Fatalf("spectral printed no JSON (%v): %s\n%s", err, out, stderr.String())
	}
	counts := map[int]int{}
	for _, res := range results {
		counts[res.Severity]++
		if res.Severity <= 1 {
			t.Errorf("%s (severity %d) at %v: %s", res.Code, res.Severity, res.Path, res.Message)
		}
	}
	t.Logf("spectral: %d errors, %d warnings, %d infos, %d hints", counts[0], counts[1], counts[2], counts[3])
}
