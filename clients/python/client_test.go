// Package python_test installs the Python client (offline, with pip) and
// runs its unittest suite against a real daemon and PostgreSQL.
package python_test

import (
	"bytes"
	"cmp"
	"context"
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

// install pip-installs the client offline (--no-index: nothing may be
// downloaded, the build backend is in the tree) into a directory, and
// returns it for PYTHONPATH.
func install(t *testing.T, py string) string {
	t.Helper()
	if err := exec.Command(py, "-m", "pip", "--version").Run(); err != nil {
		if clienttest.Required() {
			t.Fatalf("%s has no pip (apt-get install python3-pip): %v", py, err)
		}
		t.Skipf("%s has no pip (apt-get install python3-pip): %v", py, err)
	}
	target := t.TempDir()
	cmd := exec.Command(py, "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check",
		"--no-cache-dir", "--target", target, ".")
	cmd.Env = append(os.Environ(), "PIP_ROOT_USER_ACTION=ignore", "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip install ./clients/python: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(target, "sweeper_client", "__init__.py")); err != nil {
		t.Fatalf("pip installed no sweeper_client: %v", err)
	}
	return target
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestPythonClientAgainstTheDaemon(t *testing.T) {
	// SWEEPER_TEST_PYTHON picks another interpreter (the client supports
	// Python 3.9 and later), e.g. SWEEPER_TEST_PYTHON=python3.9.
	py := clienttest.LookPath(t, cmp.Or(os.Getenv("SWEEPER_TEST_PYTHON"), "python3"), "apt-get install python3 python3-pip")
	t.Logf("interpreter: %s", strings.TrimSpace(run(t, py, "--version")))
	site := install(t, py)
	env := clienttest.Start(t, binary)
	limited := clienttest.StartOn(t, binary, env.DB, env.Tokens, "SWEEPER_API_RATE_LIMIT=1", "SWEEPER_API_RATE_BURST=1")

	tests, err := filepath.Abs("tests")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// From a directory without the sources: the installed package is tested.
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "discover", "-v", "-s", tests, "-t", tests)
	cmd.Dir = t.TempDir()
	cmd.Env = append(testbin.CleanEnv(), "PYTHONPATH="+site, "PYTHONDONTWRITEBYTECODE=1",
		"SWEEPER_API="+env.API, "SWEEPER_LIMITED_API="+limited.API,
		"SWEEPER_ADMIN_TOKEN="+env.Tokens["admin"], "SWEEPER_CALLER_TOKEN="+env.Tokens["billing"],
		"SWEEPER_WORKER_TOKEN="+env.Tokens["agent"], "SWEEPER_READER_TOKEN="+env.Tokens["reader"])
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("python3 -m unittest:\n%s", out.String())
	if err != nil {
		t.Fatalf("the Python client's tests failed: %v", err)
	}
	// Every test ran: none skipped (a skip would mean no daemon was seen).
	m := regexp.MustCompile(`Ran (\d+) tests`).FindStringSubmatch(out.String())
	if m == nil || strings.Contains(out.String(), "skipped") {
		t.Fatalf("unittest ran no tests or skipped some")
	}
	t.Logf("Python client: %s tests passed", m[1])
	for name, tok := range env.Tokens {
		if strings.Contains(env.Daemon.Logs(), tok) || strings.Contains(out.String(), tok) {
			t.Fatalf("token %s printed", name)
		}
	}
}

// TestPythonClientVersionFollowsTheDaemon: the package's version is the
// daemon's client version, in pyproject.toml and in the module.
func TestPythonClientVersionFollowsTheDaemon(t *testing.T) {
	for _, f := range []string{"pyproject.toml", "sweeper_client/_version.py"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `version = "`+version.ClientVersion+`"`) &&
			!strings.Contains(string(b), `__version__ = "`+version.ClientVersion+`"`) {
			t.Errorf("%s does not carry version %s", f, version.ClientVersion)
		}
	}
}
