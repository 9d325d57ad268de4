// Package typescript_test builds the TypeScript client and runs its node:test
// suite against a real daemon and PostgreSQL, and checks that its generated
// types have not drifted from the OpenAPI document.
package typescript_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/clienttest"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/version"
)

var binary string

func TestMain(m *testing.M) { testbin.MainWithDB(m, &binary) }

// tool is an executable of node_modules/.bin, installed by npm ci; without
// them the test fails under SWEEPER_REQUIRE_DB=1 and skips otherwise.
func tool(t *testing.T, name string) string {
	t.Helper()
	clienttest.LookPath(t, "node", "apt-get install nodejs npm")
	p, err := filepath.Abs(filepath.Join("node_modules", ".bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		if clienttest.Required() {
			t.Fatalf("%s is not installed: run npm ci --prefix clients/typescript", name)
		}
		t.Skipf("%s is not installed: run npm ci --prefix clients/typescript", name)
	}
	return p
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", filepath.Base(name), args, err, out.String(), errOut.String())
	}
	return out.String()
}

// TestTypesFollowTheOpenAPIDocument regenerates src/schema.ts from
// api/openapi.json: the committed file must be what openapi-typescript
// writes (npm run generate --prefix clients/typescript updates it).
func TestTypesFollowTheOpenAPIDocument(t *testing.T) {
	gen := tool(t, "openapi-typescript")
	out := filepath.Join(t.TempDir(), "schema.ts")
	run(t, ".", os.Environ(), gen, "../../api/openapi.json", "--empty-objects-unknown", "--output", out)
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("src/schema.ts")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("src/schema.ts has drifted from api/openapi.json: run npm run generate --prefix clients/typescript")
	}
}

func TestTypeScriptClientVersionFollowsTheDaemon(t *testing.T) {
	var pkg struct{ Version string }
	b, err := os.ReadFile("package.json")
	if err != nil || json.Unmarshal(b, &pkg) != nil {
		t.Fatalf("package.json: %v", err)
	}
	src, err := os.ReadFile("src/index.ts")
	if err != nil {
		t.Fatal(err)
	}
	if pkg.Version != version.ClientVersion || !strings.Contains(string(src), `VERSION = "`+version.ClientVersion+`"`) {
		t.Fatalf("package.json %s / src/index.ts VERSION, want %s", pkg.Version, version.ClientVersion)
	}
}

func TestTypeScriptClientAgainstTheDaemon(t *testing.T) {
	tsc := tool(t, "tsc")
	node := clienttest.LookPath(t, "node", "apt-get install nodejs npm")
	// Build into a temporary tree beside a copy of the tests: dist/ and test/.
	tree := t.TempDir()
	run(t, ".", os.Environ(), tsc, "-p", ".", "--outDir", filepath.Join(tree, "dist"))
	if err := os.MkdirAll(filepath.Join(tree, "test"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests, _ := filepath.Glob("test/*.test.js")
	for _, f := range tests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "package.json"), []byte(`{"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}

	env := clienttest.Start(t, binary)
	limited := clienttest.StartOn(t, binary, env.DB, env.Tokens, "SWEEPER_API_RATE_LIMIT=1", "SWEEPER_API_RATE_BURST=1")
	out := run(t, tree, append(testbin.CleanEnv(),
		"SWEEPER_API="+env.API, "SWEEPER_LIMITED_API="+limited.API,
		"SWEEPER_ADMIN_TOKEN="+env.Tokens["admin"], "SWEEPER_CALLER_TOKEN="+env.Tokens["billing"],
		"SWEEPER_WORKER_TOKEN="+env.Tokens["agent"], "SWEEPER_READER_TOKEN="+env.Tokens["reader"]),
		node, "--test", "--test-reporter=spec", "test/")
	t.Logf("node --test:\n%s", out)
	pass := regexp.MustCompile(`(?m)^ℹ pass (\d+)$`).FindStringSubmatch(out)
	skipped := regexp.MustCompile(`(?m)^ℹ skipped (\d+)$`).FindStringSubmatch(out)
	if pass == nil || pass[1] == "0" || skipped == nil || skipped[1] != "0" {
		t.Fatalf("node --test passed no tests or skipped some")
	}
	t.Logf("TypeScript client: %s tests passed", pass[1])
	for name, tok := range env.Tokens {
		if strings.Contains(out, tok) || strings.Contains(env.Daemon.Logs(), tok) {
			t.Fatalf("token %s printed", name)
		}
	}
}
