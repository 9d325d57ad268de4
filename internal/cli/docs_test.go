package cli

import (
	"os"
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
