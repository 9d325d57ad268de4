// Package python_test runs the Python example worker and feed follower (on
// the client of clients/python) against a real daemon and PostgreSQL.
package python_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

var binary string

func TestMain(m *testing.M) { testbin.MainWithDB(m, &binary) }

func python(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if required, _ := strconv.ParseBool(os.Getenv(testdb.EnvRequireDB)); required {
			t.Fatalf("python3 not found (apt-get install python3): %v", err)
		}
		t.Skipf("python3 not found (apt-get install python3): %v", err)
	}
	return p
}

func TestPythonExampleAgainstTheDaemon(t *testing.T) {
	py := python(t)
	clientDir, err := filepath.Abs("../../clients/python")
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	env := append(testbin.CleanEnv(), "SWEEPER_DATABASE_URL="+db.URL)
	tokens := map[string]string{}
	for _, c := range [][]string{
		{"billing", "caller", "billing"}, {"agent", "worker", "agent-a"}, {"console", "reader", ""},
	} {
		args := []string{"token", "create", "--name", c[0], "--role", c[1], "--output", "json"}
		if c[2] != "" {
			args = append(args, "--principal", c[2])
		}
		r := testbin.Run(t, binary, []string{"SWEEPER_DATABASE_URL=" + db.URL}, args...)
		var line struct{ Token string }
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &line) != nil {
			t.Fatalf("token create: %s", r)
		}
		tokens[c[0]] = line.Token
	}
	d := testbin.StartDaemon(t, binary, "sweeper", []string{"SWEEPER_DATABASE_URL=" + db.URL,
		"SWEEPER_API_LISTEN=127.0.0.1:0", "SWEEPER_SWEEP_SCHEDULE=@every 1s"})
	m := regexp.MustCompile(`"api_address":"([^"]+)"`).FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no api_address:\n%s", d.Logs())
	}
	pyEnv := append(env, "SWEEPER_API=http://"+m[1], "SWEEPER_CALLER_TOKEN="+tokens["billing"],
		"SWEEPER_WORKER_TOKEN="+tokens["agent"], "SWEEPER_TOKEN="+tokens["console"], "PYTHONDONTWRITEBYTECODE=1",
		"PYTHONPATH="+clientDir)
	runPy := func(timeout time.Duration, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, args...)
		cmd.Env = pyEnv
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("python3 %v did not end within %s:\n%s", args, timeout, out.String())
		}
		code := 0
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("python3 %v: %v", args, err)
			}
			code = ee.ExitCode()
		}
		return code, out.String()
	}

	// A worker that finishes: insert, heartbeats, complete.
	code, out := runPy(60*time.Second, "worker.py", "--id", "py-ok", "--callee", "agent-a", "--work-seconds", "1")
	if code != 0 || !strings.Contains(out, "insert: inserted py-ok") || !strings.Contains(out, "outcome: completed") {
		t.Fatalf("worker: exit %d\n%s", code, out)
	}
	// A worker whose delegation passes its deadline: the sweep marks it
	// stuck and the heartbeat loop stops the worker.
	start := time.Now()
	code, out = runPy(60*time.Second, "worker.py", "--id", "py-stuck", "--callee", "agent-a", "--work-seconds", "50", "--timeout-seconds", "1")
	if code != 3 || !strings.Contains(out, "'py-stuck' was marked stuck (deadline_exceeded), stopping") {
		t.Fatalf("stuck worker: exit %d\n%s", code, out)
	}
	t.Logf("stuck worker stopped %s after it started", time.Since(start).Round(time.Millisecond))

	l := ledger.New(db.Pool)
	ctx := context.Background()
	for id, want := range map[string]ledger.Status{"py-ok": ledger.StatusCompleted, "py-stuck": ledger.StatusStuck} {
		dl, err := l.Get(ctx, id)
		if err != nil || dl.Status != want {
			t.Fatalf("%s: %+v, %v", id, dl, err)
		}
		// The worker reported progress with its heartbeats.
		var progress struct{ Beats int }
		if err := json.Unmarshal(dl.Progress, &progress); err != nil || progress.Beats < 1 || dl.ProgressAt == nil {
			t.Fatalf("%s: progress %s at %v", id, dl.Progress, dl.ProgressAt)
		}
		evs, _ := l.Events(ctx, id)
		if len(evs) != 3 || evs[0].Actor != "api:billing" || evs[1].Actor != "api:agent" {
			t.Fatalf("%s events: %+v", id, evs)
		}
	}

	// Following the feed with a cursor file, stopped and restarted: every
	// event once, in order.
	cursor := filepath.Join(t.TempDir(), "cursor")
	var lines []string
	for _, n := range []string{"4", "2"} {
		code, out := runPy(60*time.Second, "follow.py", "--cursor-file", cursor, "--max-events", n, "--wait", "5s")
		if code != 0 {
			t.Fatalf("follow: exit %d\n%s", code, out)
		}
		lines = append(lines, strings.Split(strings.TrimSpace(out), "\n")...)
	}
	var got []string
	for _, line := range lines {
		var ev ledger.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("follow printed %q", line)
		}
		got = append(got, ev.DelegationID+":"+string(ev.ToStatus))
	}
	want := "py-ok:queued py-ok:in_progress py-ok:completed py-stuck:queued py-stuck:in_progress py-stuck:stuck"
	if strings.Join(got, " ") != want {
		t.Fatalf("followed %v, want %s", got, want)
	}

	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("daemon exit %d", code)
	}
	for name, tok := range tokens {
		if strings.Contains(d.Logs(), tok) {
			t.Fatalf("token %s in the daemon's logs", name)
		}
	}
}
