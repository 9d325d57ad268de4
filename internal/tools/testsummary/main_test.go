package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The testdata files are real `go test -json ./...` output of small modules.

func summarize(t *testing.T, file string) (counts, string) {
	t.Helper()
	in, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	c := run(bytes.NewReader(in), &out)
	return c, out.String()
}

func TestPassingRun(t *testing.T) {
	c, out := summarize(t, "testdata/passing.json")
	if want := (counts{passed: 3, skipped: 1, packages: 1}); c != want {
		t.Errorf("counts = %+v, want %+v", c, want)
	}
	if !c.ok() {
		t.Error("a passing run is not ok")
	}
	if got, want := c.String(), "tests: 3 passed, 0 failed, 1 skipped (packages: 1)"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
	for _, want := range []string{"ok  \ttsdemo2/a\t", "?   \ttsdemo2/d\t[no test files]"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "quiet") {
		t.Errorf("output of a passing test is shown:\n%s", out)
	}
}

func TestFailingRun(t *testing.T) {
	c, out := summarize(t, "testdata/mixed.json")
	want := counts{passed: 2, failed: 4, skipped: 1, packages: 3, failedPkgs: 3, buildFailures: 1}
	if c != want {
		t.Errorf("counts = %+v, want %+v", c, want)
	}
	if c.ok() {
		t.Error("a failing run is ok")
	}
	if got, want := c.String(), "tests: 2 passed, 4 failed, 1 skipped (packages: 3, failed: 3, build failures: 1)"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
	for _, want := range []string{
		"a_test.go:4: some context", "--- FAIL: TestFail", // a failed test with its log
		"a_test.go:6: y broke", "--- FAIL: TestSub/y", // a failed subtest
		"FAIL\ttsdemo/a\t",
		"panic: kaboom", "FAIL\ttsdemo/b\t", // a panic
		`cannot use "s" (untyped string constant) as int value`, "FAIL\ttsdemo/c [build failed]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNonJSONLinesPassThrough(t *testing.T) {
	var out bytes.Buffer
	c := run(strings.NewReader("go: updates to go.mod needed\n{not json\n"), &out)
	if got := out.String(); got != "go: updates to go.mod needed\n{not json\n" {
		t.Errorf("output = %q", got)
	}
	if c != (counts{}) {
		t.Errorf("counts = %+v, want none", c)
	}
}
