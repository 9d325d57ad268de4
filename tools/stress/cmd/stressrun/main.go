// Command stressrun runs sweeper's stress suite and prints its summary table:
// the race storm, the fault tests, security and migration tests of package
// stress (long form), the hostile-input and leak tests of the other packages,
// and a short fuzzing run of every native fuzz target. Every figure in the
// table is computed from this run: the tests write their figures to a
// directory (see package report), the fuzzing engine's output gives its
// executions, and the table of broken configurations in cmd/sweeper is
// counted from its source, next to its test's result.
//
// `make stress` builds it from the tools module and runs it from the
// repository root, with GOWORK=off so that each module's tests run on its own
// go.mod:
//
//	(cd tools && go build -o ../bin/stressrun ./stress/cmd/stressrun)
//	bin/stressrun -duration 60s -fuzztime 10s
//
// It exits 1 when a test failed, a fuzz target found a failure, or a check
// found a violation.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tasksweeper/sweeper/internal/stress/report"
)

func main() {
	duration := flag.Duration("duration", 60*time.Second, "how long the race storm runs")
	fuzztime := flag.Duration("fuzztime", 10*time.Second, "how long each fuzz target runs")
	out := flag.String("out", "", "directory for figures and logs (default: a new temporary directory)")
	goCmd := flag.String("go", "go", "the go command")
	flag.Parse()
	os.Exit(run(*goCmd, *duration, *fuzztime, *out))
}

// step is one `go test` invocation of the run.
type step struct {
	name string
	dir  string // the module's directory, relative to the repository root
	args []string
}

// tally counts test results of `go test -json` output.
type tally struct {
	passed, failed, skipped int
	failedNames             []string
	passedNames             map[string]bool
}

func run(goCmd string, duration, fuzztime time.Duration, out string) int {
	start := time.Now()
	root, err := moduleRoot(goCmd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stressrun:", err)
		return 1
	}
	if out == "" {
		if out, err = os.MkdirTemp("", "sweeper-stress-"); err != nil {
			fmt.Fprintln(os.Stderr, "stressrun:", err)
			return 1
		}
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "stressrun:", err)
		return 1
	}
	figDir := filepath.Join(out, "figures")
	_ = os.RemoveAll(figDir)
	if err := os.MkdirAll(figDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "stressrun:", err)
		return 1
	}
	env := append(os.Environ(),
		"GOWORK=off", // each module on its own go.mod
		"SWEEPER_REQUIRE_DB=1",
		report.EnvOut+"="+figDir,
		"SWEEPER_STRESS_DURATION="+duration.String(),
		"SWEEPER_STRESS_FULL=1",
	)
	logf := func(format string, args ...any) {
		fmt.Printf("stressrun [%s] "+format+"\n", append([]any{time.Since(start).Round(time.Second)}, args...)...)
	}

	t := &tally{passedNames: map[string]bool{}}
	steps := []step{
		{"storm, faults, security, migrations", "tools", []string{"-timeout", "60m", "./stress/"}},
		{"hostile input", ".", []string{"-timeout", "20m", "-run", "Hostile|TestBrokenConfigsExit2NamingTheKey",
			"./ledger/", "./internal/config/", "./cmd/sweeper/"}},
		{"leaks", ".", []string{"-timeout", "20m", "-run", "StartStop", "./internal/daemon/", "./sweep/"}},
	}
	for _, s := range steps {
		logf("%s: go test %s", s.name, strings.Join(s.args, " "))
		args := append([]string{"test", "-count=1", "-json", "-v"}, s.args...)
		if err := goTestJSON(goCmd, filepath.Join(root, s.dir), env, args, filepath.Join(out, slug(s.name)+".log"), t); err != nil {
			logf("%s: %v", s.name, err)
		}
	}

	// Fuzzing: every native fuzz target of the product module, fuzztime
	// each.
	targets, err := fuzzTargets(goCmd, root, env)
	if err != nil {
		logf("listing fuzz targets: %v", err)
		t.failed++
		t.failedNames = append(t.failedNames, "listing fuzz targets")
	}
	var execs int64
	for _, ft := range targets {
		logf("fuzzing %s %s for %s", ft.pkg, ft.name, fuzztime)
		n, err := fuzz(goCmd, root, env, ft, fuzztime, filepath.Join(out, "fuzz-"+ft.name+".log"))
		execs += n
		if err != nil {
			logf("fuzzing %s: %v (log: %s)", ft.name, err, filepath.Join(out, "fuzz-"+ft.name+".log"))
			t.failed++
			t.failedNames = append(t.failedNames, ft.name)
			continue
		}
		logf("%s: %d executions", ft.name, n)
	}

	// The e2e table of broken configurations: counted from its source,
	// credited only if its test passed in this run.
	table, err := countBrokenConfigTable(filepath.Join(root, "cmd", "sweeper", "e2e_test.go"))
	if err != nil {
		logf("counting the broken-config table: %v", err)
	}
	if !t.passedNames["TestBrokenConfigsExit2NamingTheKey"] {
		table = 0
	}

	fig, _, err := report.Load(figDir)
	if err != nil {
		logf("reading figures: %v", err)
		t.failed++
	}
	ok := t.failed == 0 && fig[report.Violations] == 0
	fmt.Println()
	fmt.Printf("sweeper stress summary (%s, storm %s, fuzz %s per target; logs in %s)\n\n",
		time.Since(start).Round(time.Second), duration, fuzztime, out)
	fmt.Print(report.Table(rows(fig, table, execs, len(targets), t, ok)))
	if !ok {
		fmt.Printf("\nFAILED: %s\n", strings.Join(t.failedNames, ", "))
		return 1
	}
	return 0
}

func rows(f report.Figures, table, execs int64, targets int, t *tally, ok bool) []report.Row {
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	result := "PASS"
	if !ok {
		result = "FAIL"
	}
	configs := table + f[report.BrokenConfigs]
	inputs := execs + configs + f[report.HostileInputs]
	return []report.Row{
		{What: "writers", Value: n(f[report.Writers]), Note: fmt.Sprintf("race storm: %d sweeper daemons (least-privilege role), %ds", f[report.Daemons], f["duration_seconds"])},
		{What: "writer operations", Value: n(f[report.WriterOps]), Note: "logged client-side with what the writer was told"},
		{What: "rows inserted", Value: n(f[report.Inserts])},
		{What: "transitions", Value: n(f[report.Transitions]), Note: "status changes in the event log, one event each"},
		{What: "stuck", Value: n(f[report.Stuck]), Note: fmt.Sprintf("heartbeat_timeout %d, deadline_exceeded %d, in %d sweep transactions",
			f[report.StuckHeartbeat], f[report.StuckDeadline], f["sweep_transactions"])},
		{What: "notifications", Value: n(f[report.Notifications]), Note: "one per stuck transition"},
		{What: "live heartbeats", Value: n(f[report.LiveHeartbeats]), Note: "none followed by a premature stuck"},
		{What: "lost races", Value: n(f[report.LostRaces]), Note: "writers told the row was already terminal"},
		{What: "revive attempts", Value: n(f[report.ReviveAttempts]), Note: "on terminal rows; every one refused"},
		{What: "checks", Value: n(f[report.Checks]), Note: "storm invariants evaluated"},
		{What: "violations", Value: n(f[report.Violations])},
		{What: "faults survived", Value: n(f[report.FaultsSurvived]), Note: "server killed+restarted, backend terminated, statement timeout (daemon, --once), SIGKILL, SIGTERM, failover to a standby (sync, async)"},
		{What: "outputs grepped for the password", Value: n(f[report.SecretChecks]), Note: "every command, working and failing DSNs"},
		{What: "concurrent migrate up", Value: n(f[report.MigrationRacers]), Note: "processes, 3 at a time, schema applied once"},
		{What: "privileges refused", Value: n(f[report.PrivilegeRefusal]), Note: "statements the daemon role tried"},
		{What: "inputs tried", Value: n(inputs), Note: "fuzz executions + broken configs + hostile ledger inputs"},
		{What: "  fuzz executions", Value: n(execs), Note: fmt.Sprintf("%d targets", targets)},
		{What: "  broken configs", Value: n(configs), Note: fmt.Sprintf("%d in the e2e table + %d hostile, each exit 2 naming the key", table, f[report.BrokenConfigs])},
		{What: "  hostile ledger inputs", Value: n(f[report.HostileInputs]), Note: "typed error and nothing written, or stored verbatim"},
		{What: "tests", Value: fmt.Sprintf("%d/%d", t.passed, t.passed+t.failed), Note: fmt.Sprintf("passed (%d skipped)", t.skipped)},
		{What: "result", Value: result},
	}
}

// moduleRoot is the directory of the product module, the repository root,
// from the product's directory or from the tools module's.
func moduleRoot(goCmd string) (string, error) {
	cmd := exec.Command(goCmd, "list", "-m", "-f", "{{.Dir}}", "github.com/tasksweeper/sweeper")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("finding the product module (run from the repository or tools/): %w", err)
	}
	return filepath.Clean(strings.TrimSpace(string(b))), nil
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// testEvent is one line of `go test -json`.
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// goTestJSON runs go test -json, prints the tests' output as it comes,
// writes it to logPath, and tallies results.
func goTestJSON(goCmd, dir string, env, args []string, logPath string, t *tally) error {
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(goCmd, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stderr = io.MultiWriter(os.Stderr, logFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e testEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Println(sc.Text())
			fmt.Fprintln(logFile, sc.Text())
			continue
		}
		if e.Output != "" {
			fmt.Print(e.Output)
			fmt.Fprint(logFile, e.Output)
		}
		switch {
		case e.Test == "" && e.Action == "fail":
			t.failed++
			t.failedNames = append(t.failedNames, "package "+e.Package)
		case e.Test == "" || strings.Contains(e.Test, "/"):
			// package lines and subtests: the top-level test counts
		case e.Action == "pass":
			t.passed++
			t.passedNames[e.Test] = true
		case e.Action == "fail":
			t.failed++
			t.failedNames = append(t.failedNames, e.Test)
		case e.Action == "skip":
			t.skipped++
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("go test: %w", err)
	}
	return nil
}

// fuzzTarget is a native fuzz target.
type fuzzTarget struct{ pkg, name string }

// fuzzTargets lists every Fuzz function of the module's test files, found
// in their source (running test binaries to list them would run their
// TestMain, some of which build sweeper).
func fuzzTargets(goCmd, dir string, env []string) ([]fuzzTarget, error) {
	cmd := exec.Command(goCmd, "list", "-f", "{{.ImportPath}} {{.Dir}}", "./...")
	cmd.Dir, cmd.Env = dir, env
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	var out []fuzzTarget
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		pkg, pkgDir, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(pkgDir, "*_test.go"))
		for _, file := range files {
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
			if err != nil {
				return nil, err
			}
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Fuzz") && len(fn.Type.Params.List) == 1 {
					out = append(out, fuzzTarget{pkg: pkg, name: fn.Name.Name})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b fuzzTarget) int { return strings.Compare(a.pkg+a.name, b.pkg+b.name) })
	return out, nil
}

var execsRE = regexp.MustCompile(`execs: (\d+)`)

// fuzz runs one target for d and returns the executions the engine reported.
func fuzz(goCmd, dir string, env []string, ft fuzzTarget, d time.Duration, logPath string) (int64, error) {
	cmd := exec.Command(goCmd, "test", "-run", "^$", "-fuzz", "^"+ft.name+"$", "-fuzztime", d.String(), ft.pkg)
	cmd.Dir, cmd.Env = dir, env
	b, err := cmd.CombinedOutput()
	_ = os.WriteFile(logPath, b, 0o644)
	var execs int64
	for _, m := range execsRE.FindAllStringSubmatch(string(b), -1) {
		if v, perr := strconv.ParseInt(m[1], 10, 64); perr == nil {
			execs = max(execs, v)
		}
	}
	if err != nil {
		return execs, fmt.Errorf("%w\n%s", err, tail(string(b), 30))
	}
	if execs == 0 {
		return 0, fmt.Errorf("no executions reported")
	}
	return execs, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// countBrokenConfigTable counts the cases of the table in
// TestBrokenConfigsExit2NamingTheKey: the composite literal assigned to
// `cases`.
func countBrokenConfigTable(path string) (int64, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return 0, err
	}
	var n int64 = -1
	ast.Inspect(f, func(node ast.Node) bool {
		fn, ok := node.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "TestBrokenConfigsExit2NamingTheKey" {
			return true
		}
		ast.Inspect(fn.Body, func(node ast.Node) bool {
			as, ok := node.(*ast.AssignStmt)
			if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
				return true
			}
			if id, ok := as.Lhs[0].(*ast.Ident); ok && id.Name == "cases" {
				if cl, ok := as.Rhs[0].(*ast.CompositeLit); ok {
					n = int64(len(cl.Elts))
				}
			}
			return true
		})
		return false
	})
	if n < 0 {
		return 0, fmt.Errorf("no `cases` table in TestBrokenConfigsExit2NamingTheKey of %s", path)
	}
	return n, nil
}
