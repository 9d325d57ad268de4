package pgserver_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// dockerish matches the import paths of Docker clients (docker/cli,
// moby/moby/client, ory/dockertest...).
var dockerish = regexp.MustCompile(`docker|moby`)

// goListDeps returns every package pkg links, as `go list -deps` says for
// the given environment (NAME=value).
func goListDeps(t *testing.T, pkg string, env ...string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestSweeperBinaryLinksNoDocker: the shipped binary links only what it runs.
// `sweeper dev` uses pgserver with local binaries; the Docker client is in
// pgdocker, which only the test harness imports.
func TestSweeperBinaryLinksNoDocker(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{
		nil, // this machine, as `make build`
		{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}, // as `make dist`
		{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"},
		{"GOOS=darwin", "GOARCH=arm64"},
	} {
		t.Run(strings.Join(append([]string{"env"}, env...), " "), func(t *testing.T) {
			t.Parallel()
			deps := goListDeps(t, "github.com/tasksweeper/sweeper/cmd/sweeper", env...)
			var bad []string
			sawPgserver := false
			for _, p := range deps {
				if dockerish.MatchString(p) {
					bad = append(bad, p)
				}
				sawPgserver = sawPgserver || p == "github.com/tasksweeper/sweeper/internal/pgserver"
			}
			if len(bad) > 0 {
				t.Errorf("cmd/sweeper links %d Docker packages, want 0:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			// The list is the real one: `sweeper dev` links pgserver.
			if !sawPgserver {
				t.Errorf("cmd/sweeper does not link internal/pgserver: is `go list` looking at the right package?\n%s",
					strings.Join(deps, "\n"))
			}
		})
	}
}

// TestPgdockerLinksDocker is the check's control: the package that holds the
// Docker client is caught by the same pattern.
func TestPgdockerLinksDocker(t *testing.T) {
	t.Parallel()
	n := 0
	for _, p := range goListDeps(t, "github.com/tasksweeper/sweeper/internal/pgserver/pgdocker") {
		if dockerish.MatchString(p) {
			n++
		}
	}
	if n == 0 {
		t.Fatal("pgdocker links no package matching docker|moby: the pattern of TestSweeperBinaryLinksNoDocker is wrong")
	}
	t.Logf("pgdocker links %d Docker packages", n)
}
