package cli

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
)

// The README documents every configuration key and every sweeper_* metric;
// these tests keep it from drifting from the code.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestREADMEDocumentsEveryConfigKey(t *testing.T) {
	t.Parallel()
	doc := readme(t)
	for _, k := range config.Keys() {
		for _, want := range []string{"`" + k.Path + "`", "`" + k.Env + "`", "`--" + k.Flag + "`"} {
			if !strings.Contains(doc, want) {
				t.Errorf("README lacks %s (key %s)", want, k.Path)
			}
		}
	}
}

func TestREADMEDocumentsEveryMetric(t *testing.T) {
	t.Parallel()
	doc := readme(t)
	families, err := daemon.NewMetrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		if name := f.GetName(); strings.HasPrefix(name, "sweeper_") {
			n++
			if !strings.Contains(doc, "`"+name) {
				t.Errorf("README lacks metric %s", name)
			}
		}
	}
	if n < 9 {
		t.Fatalf("only %d sweeper_ metrics registered", n)
	}
}

// docFiles are the documents whose references TestDocsNameOnlyFilesThatExist
// checks, relative to the repository root.
var docFiles = []string{"README.md", "docs/design.md", "docs/operations.md", "deploy/systemd/README.md"}

// usersFiles are paths the documents name that live in the user's
// repository or machine, not in this one.
var usersFiles = map[string]bool{
	".github/workflows/sweep.yml": true,
	".gitlab-ci.yml":              true,
}

// docPath matches a backquoted span or a link target that looks like a
// relative path to a file of the repository: a name with an extension the
// repository uses, optionally after directories.
var docPath = regexp.MustCompile("(?:`|\\]\\()([A-Za-z0-9_.][A-Za-z0-9_./-]*\\.(?:md|go|ya?ml|sql|sh|json|service|timer))(?:`|\\)|#)")

// TestDocsNameOnlyFilesThatExist checks that every file the documents name
// is in the repository, at the path given or, for a path written relative
// to the section's directory (alerts_test.yml), at the end of a path.
func TestDocsNameOnlyFilesThatExist(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool {
		for _, f := range files {
			if f == p || strings.HasSuffix(f, "/"+p) {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, doc := range docFiles {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docPath.FindAllStringSubmatch(string(b), -1) {
			p := strings.TrimPrefix(m[1], "./")
			if strings.HasPrefix(p, "../") {
				p = path.Join(path.Dir(doc), p)
			}
			if usersFiles[p] || strings.Contains(p, "*") {
				continue
			}
			checked++
			if !exists(p) {
				t.Errorf("%s names %s, which is not in the repository", doc, p)
			}
		}
	}
	t.Logf("%d file names checked", checked)
	if checked < 20 {
		t.Fatalf("only %d file names found in the documents; is the pattern broken?", checked)
	}
}

// TestREADMEListsEachCommandsFlags keeps the README's table of the flags
// each command takes in step with the command table.
func TestREADMEListsEachCommandsFlags(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("| command | flags |\n|---|---|\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "| `%s` | %s |\n", c.name, c.describeFlags(func(f string) string { return "`" + f + "`" }))
	}
	if doc := readme(t); !strings.Contains(doc, b.String()) {
		t.Fatalf("README.md lacks the table of flags by command, or it is stale; it must read:\n%s", b.String())
	}
}
