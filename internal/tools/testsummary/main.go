// Command testsummary reads `go test -json` events on stdin and prints what a
// person needs: one line per package ("ok", "FAIL", "?"), the output of each
// failed test, build errors, and a final count:
//
//	tests: 123 passed, 0 failed, 0 skipped (packages: 7)
//
// It exits with status 1 when a test, a package or a build failed. Lines that
// are not JSON events (errors of the go command) are copied as they are.
//
// Usage:
//
//	go test -json ./... | testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string // package fail caused by a build failure
}

// counts is the outcome of a run.
type counts struct {
	passed, failed, skipped int
	packages, failedPkgs    int // packages with tests, and those that failed
	buildFailures           int // packages whose tests did not build
}

func (c counts) ok() bool { return c.failed == 0 && c.failedPkgs == 0 && c.buildFailures == 0 }

func (c counts) String() string {
	s := fmt.Sprintf("tests: %d passed, %d failed, %d skipped (packages: %d", c.passed, c.failed, c.skipped, c.packages)
	if c.failedPkgs > 0 {
		s += fmt.Sprintf(", failed: %d", c.failedPkgs)
	}
	if c.buildFailures > 0 {
		s += fmt.Sprintf(", build failures: %d", c.buildFailures)
	}
	return s + ")"
}

// summarizer accumulates output until it knows whether to show it.
type summarizer struct {
	w        io.Writer
	c        counts
	testOut  map[string][]string // package + "\x00" + test -> output of a running test
	pkgOut   map[string][]string // package -> output outside tests
	buildOut map[string][]string // import path -> build output
}

func newSummarizer(w io.Writer) *summarizer {
	return &summarizer{
		w:        w,
		testOut:  map[string][]string{},
		pkgOut:   map[string][]string{},
		buildOut: map[string][]string{},
	}
}

func (s *summarizer) line(raw string) {
	var e event
	if !strings.HasPrefix(raw, "{") || json.Unmarshal([]byte(raw), &e) != nil {
		fmt.Fprintln(s.w, raw)
		return
	}
	key := e.Package + "\x00" + e.Test
	switch e.Action {
	case "build-output":
		s.buildOut[e.ImportPath] = append(s.buildOut[e.ImportPath], e.Output)
	case "build-fail":
		s.c.buildFailures++
		s.print(s.buildOut[e.ImportPath])
		delete(s.buildOut, e.ImportPath)
	case "output":
		if e.Test != "" {
			s.testOut[key] = append(s.testOut[key], e.Output)
		} else {
			s.pkgOut[e.Package] = append(s.pkgOut[e.Package], e.Output)
		}
	case "pass", "fail", "skip":
		if e.Test != "" {
			s.testDone(e, key)
		} else {
			s.packageDone(e)
		}
	}
}

func (s *summarizer) testDone(e event, key string) {
	switch e.Action {
	case "pass":
		s.c.passed++
	case "skip":
		s.c.skipped++
	case "fail":
		s.c.failed++
		s.print(s.testOut[key])
	}
	delete(s.testOut, key)
}

func (s *summarizer) packageDone(e event) {
	out := s.pkgOut[e.Package]
	delete(s.pkgOut, e.Package)
	switch {
	case e.Action == "skip":
		fmt.Fprintf(s.w, "?   \t%s\t[no test files]\n", e.Package)
	case e.Action == "pass":
		s.c.packages++
		fmt.Fprintf(s.w, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
	case e.FailedBuild != "":
		s.c.packages++
		s.c.failedPkgs++
		fmt.Fprintf(s.w, "FAIL\t%s [build failed]\n", e.Package)
	default:
		s.c.packages++
		s.c.failedPkgs++
		// Output of tests that never ended (a panic, a timeout), then the
		// package's own output (TestMain, "FAIL pkg").
		var running []string
		for k := range s.testOut {
			if strings.HasPrefix(k, e.Package+"\x00") {
				running = append(running, k)
			}
		}
		slices.Sort(running)
		for _, k := range running {
			s.print(s.testOut[k])
			delete(s.testOut, k)
		}
		s.print(out)
		if !slices.ContainsFunc(out, func(l string) bool { return strings.HasPrefix(l, "FAIL\t"+e.Package) }) {
			fmt.Fprintf(s.w, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
		}
	}
}

func (s *summarizer) print(lines []string) {
	for _, l := range lines {
		io.WriteString(s.w, l)
	}
}

func run(in io.Reader, out io.Writer) counts {
	s := newSummarizer(out)
	r := bufio.NewReader(in)
	for {
		l, err := r.ReadString('\n')
		if l = strings.TrimRight(l, "\r\n"); l != "" {
			s.line(l)
		}
		if err != nil {
			break
		}
	}
	return s.c
}

func main() {
	c := run(os.Stdin, os.Stdout)
	fmt.Println(c)
	if !c.ok() {
		os.Exit(1)
	}
}
