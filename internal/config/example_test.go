package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// update rewrites config.example.yaml from the key table:
//
//	go test ./internal/config -run TestExampleConfig -update
var update = flag.Bool("update", false, "rewrite config.example.yaml from the key table")

// examplePath is config.example.yaml at the repository root.
var examplePath = filepath.Join("..", "..", "config.example.yaml")

// TestExampleConfig keeps config.example.yaml in step with the key table: it
// is exactly what exampleYAML generates, so every key is there with its
// documentation, environment variable, flag and default.
func TestExampleConfig(t *testing.T) {
	want := exampleYAML()
	if *update {
		if err := os.WriteFile(examplePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		gotLines, wantLines := strings.Split(string(got), "\n"), strings.Split(want, "\n")
		i := 0
		for i < len(gotLines) && i < len(wantLines) && gotLines[i] == wantLines[i] {
			i++
		}
		line := func(lines []string) string {
			if i < len(lines) {
				return lines[i]
			}
			return "<end of file>"
		}
		t.Fatalf("%s is out of date; run: go test ./internal/config -run TestExampleConfig -update\n"+
			"line %d is\n\t%s\nwant\n\t%s", examplePath, i+1, line(gotLines), line(wantLines))
	}
}

// TestExampleConfigIsDefaults checks that config.example.yaml parses
// cleanly, sets every key, and sets each to its default.
func TestExampleConfigIsDefaults(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	l := loader{origins: map[string]origin{}} // a key the file misses stays zero
	l.applyFile(examplePath, data)
	if len(l.errs) > 0 {
		t.Fatalf("config.example.yaml: %v", l.errs)
	}
	for _, k := range Keys() {
		if _, ok := l.origins[k.Path]; !ok {
			t.Errorf("config.example.yaml does not set %s", k.Path)
		}
		if !strings.Contains(string(data), k.Env) || !strings.Contains(string(data), "--"+k.Flag) {
			t.Errorf("config.example.yaml does not name %s or --%s", k.Env, k.Flag)
		}
	}
	if want := Default(); l.cfg != want {
		t.Errorf("config.example.yaml sets\n%v\nwant the defaults\n%v", l.cfg, want)
	}
	cfg, err := Load(examplePath, nil, nil)
	if err != nil || cfg != Default() {
		t.Errorf("Load(config.example.yaml) = %v, %v; want the defaults", cfg, err)
	}
}

// exampleYAML renders the documented example file from Keys.
func exampleYAML() string {
	var b strings.Builder
	b.WriteString(`# sweeper configuration: every key, set to its default.
#
# Values are read in this order, a later source winning: the defaults, this
# file, SWEEPER_<SECTION>_<KEY> environment variables, then command-line
# flags. Each key below names its environment variable and flag. Unknown keys
# are errors; keep only the keys you change.
#
# Durations are Go durations (30s, 10m, 1h30m); booleans are true or false.
#
# Generated from the key table in internal/config/keys.go; to refresh it:
#   go test ./internal/config -run TestExampleConfig -update
`)
	section := "-"
	for _, k := range Keys() {
		sec, leaf, nested := strings.Cut(k.Path, ".")
		indent := "  "
		if !nested {
			sec, leaf, indent = "", k.Path, ""
		}
		b.WriteString("\n")
		if sec != section {
			if sec != "" {
				b.WriteString(sec + ":\n")
			}
			section = sec
		}
		for _, line := range wrap(k.Doc, 78-len(indent)-2) {
			b.WriteString(indent + "# " + line + "\n")
		}
		env := k.Env
		if k.Path == "database.url" {
			env += " (then " + DatabaseURLFallbackEnv + ")"
		}
		fmt.Fprintf(&b, "%s# Env %s, flag --%s, default %s.\n", indent, env, k.Flag, yamlScalar(k))
		fmt.Fprintf(&b, "%s%s: %s\n", indent, leaf, yamlScalar(k))
	}
	return b.String()
}

// plainYAML matches strings that YAML reads back as the same string when
// written without quotes.
var plainYAML = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// yamlScalar writes a key's default as a YAML scalar, quoting strings that
// need it.
func yamlScalar(k KeyInfo) string {
	if k.Type != "string" {
		return k.Default
	}
	switch k.Default {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return strconv.Quote(k.Default)
	}
	if plainYAML.MatchString(k.Default) {
		return k.Default
	}
	return strconv.Quote(k.Default)
}

// wrap splits text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
