// Package polyglot_test runs the three-language example against a real
// daemon and PostgreSQL: a Go caller records delegations with a retry
// policy, a Python pool and a TypeScript pool claim and work them (some
// attempts crash, some wedge), the sweeper marks the wedged ones stuck, the
// database retries, and every chain must end completed or exhausted.
package polyglot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/clienttest"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/ledger"
)

var binary string

func TestMain(m *testing.M) { testbin.MainWithDB(m, &binary) }

// n is the example's size in make test (the README runs 100).
const n = 24

func TestThreeLanguages(t *testing.T) {
	py := clienttest.LookPath(t, "python3", "apt-get install python3")
	node := clienttest.LookPath(t, "node", "apt-get install nodejs npm")
	tsc, err := filepath.Abs("../../clients/typescript/node_modules/.bin/tsc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		if clienttest.Required() {
			t.Fatal("the TypeScript client's tools are not installed: run npm ci --prefix clients/typescript")
		}
		t.Skip("the TypeScript client's tools are not installed: run npm ci --prefix clients/typescript")
	}
	pyClient, _ := filepath.Abs("../../clients/python")
	tsDist := filepath.Join(t.TempDir(), "dist")
	run(t, "../../clients/typescript", nil, tsc, "-p", ".", "--outDir", tsDist)
	caller := filepath.Join(t.TempDir(), "caller")
	run(t, ".", nil, "go", "build", "-o", caller, "./caller")

	env := clienttest.Start(t, binary)
	store := auth.NewStore(env.DB.Pool)
	for _, callee := range []string{"py-pool", "ts-pool"} {
		tok, err := store.Create(context.Background(), callee, auth.RoleWorker, callee)
		if err != nil {
			t.Fatal(err)
		}
		env.Tokens[callee] = tok
	}
	base := append(testbin.CleanEnv(), "SWEEPER_API="+env.API)
	pyPool := start(t, append(base, "SWEEPER_TOKEN="+env.Tokens["py-pool"], "PYTHONPATH="+pyClient, "PYTHONDONTWRITEBYTECODE=1"),
		py, "python_pool.py", "--callee", "py-pool")
	tsPool := start(t, append(base, "SWEEPER_TOKEN="+env.Tokens["ts-pool"], "SWEEPER_CLIENT="+filepath.Join(tsDist, "index.js")),
		node, "ts_pool.mjs", "--callee", "ts-pool")

	out := run(t, ".", append(base, "SWEEPER_TOKEN="+env.Tokens["billing"]), caller, "-n", fmt.Sprint(n), "-timeout", "4m")
	var sum struct{ Inserted, Completed, Exhausted, Retries int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("caller printed %q", out)
	}
	t.Logf("caller: %+v", sum)
	pyOut, tsOut := pyPool.stop(t), tsPool.stop(t)

	// The ledger's own account: every chain ends completed or exhausted.
	l := ledger.New(env.DB.Pool)
	ctx := context.Background()
	completed, exhausted, attempts := 0, 0, 0
	reasons := map[string]int{}
	for i := range n {
		chain, err := l.Attempts(ctx, fmt.Sprintf("poly-%03d", i))
		if err != nil || len(chain) == 0 {
			t.Fatalf("chain %d: %v", i, err)
		}
		attempts += len(chain)
		for _, d := range chain {
			switch d.Status {
			case ledger.StatusStuck:
				reasons[d.StuckReason]++
			case ledger.StatusFailed:
				reasons[d.ErrorDetail]++
			}
		}
		last := chain[len(chain)-1]
		switch {
		case last.Status == ledger.StatusCompleted:
			completed++
		case last.Exhausted:
			exhausted++
		default:
			t.Fatalf("chain %d ends %s at attempt %d (not exhausted):\n%s\n%s", i, last.Status, last.Attempt, pyOut, tsOut)
		}
	}
	t.Logf("%d chains: %d completed, %d exhausted, %d attempts; retried for %v", n, completed, exhausted, attempts, reasons)
	if completed+exhausted != n || completed != sum.Completed || exhausted != sum.Exhausted {
		t.Fatalf("ledger %d completed %d exhausted, caller said %+v", completed, exhausted, sum)
	}
	// Both failure modes happened in both languages, and were retried.
	for _, want := range []string{"stalled", "RuntimeError: crashed at step 3", "Error: crashed at step 3"} {
		if reasons[want] == 0 {
			t.Errorf("no attempt ended %q: %v", want, reasons)
		}
	}
	for _, s := range []string{"python pool stopped", "typescript pool stopped"} {
		if !strings.Contains(pyOut+tsOut, s) {
			t.Errorf("a pool did not stop gracefully:\n%s\n%s", pyOut, tsOut)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", filepath.Base(name), args, err, out.String(), errOut.String())
	}
	return out.String()
}

type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// stop sends SIGTERM and waits for a graceful exit; it returns the output.
func (p *proc) stop(t *testing.T) string {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v:\n%s", filepath.Base(p.cmd.Path), err, p.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute:\n%s", filepath.Base(p.cmd.Path), p.out.String())
	}
	return p.out.String()
}
