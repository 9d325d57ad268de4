package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// The tests in this file run the built binary, as users and CI do.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sweeper-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sweeper")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sweeper:", err)
		os.Exit(1)
	}
	code := testdb.Main(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run runs the binary with args and extra environment, in a clean
// environment (no SWEEPER_* or DATABASE_URL from the test process).
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running sweeper %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SWEEPER_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// withPassword returns the test database's URL with a password added, so
// tests can check it never shows. The local test server trusts every
// connection, so any password works.
func withPassword(url string) string {
	return strings.Replace(url, "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
}

const secret = "s3cr3t-hunter2"

func assertNoSecret(t *testing.T, what string, r result) {
	t.Helper()
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stderr, secret) {
		t.Fatalf("%s shows the password:\n%s", what, r)
	}
}

func seedRaw(t *testing.T, db *testdb.DB, sql string) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

const seedSQL = `
INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, deadline) VALUES
  ('stale-1', 'c', 'w', 'in_progress', now() - interval '11 minutes', now() + interval '1 hour'),
  ('stale-2', 'c', 'w', 'in_progress', now() - interval '2 hours', now() + interval '1 hour'),
  ('late',    'c', 'w', 'queued', NULL, now() - interval '1 second'),
  ('fresh',   'c', 'w', 'in_progress', now() - interval '1 minute', now() + interval '1 hour'),
  ('done',    'c', 'w', 'completed', now() - interval '2 hours', now() - interval '1 hour')`

func TestOnceJSONSummaryAndExitCodes(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, seedSQL)
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.URL), "SWEEPER_LOG_LEVEL=debug"}

	dry := run(t, env, "--once", "--dry-run", "--output", "json")
	if dry.code != 0 {
		t.Fatalf("dry run: %s", dry)
	}
	var stuck int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations WHERE status = 'stuck'`).Scan(&stuck); err != nil || stuck != 0 {
		t.Fatalf("dry run changed rows: %d stuck, %v", stuck, err)
	}

	r := run(t, env, "--once", "--output", "json", "--fail-on-stuck")
	if r.code != 3 {
		t.Fatalf("--fail-on-stuck with stuck rows: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 1 {
		t.Fatalf("--output json printed %d lines: %q", len(lines), r.stdout)
	}
	var sum struct {
		Swept    int            `json:"swept"`
		ByReason map[string]int `json:"by_reason"`
		Batches  int            `json:"batches"`
		Duration *float64       `json:"duration_ms"`
		DryRun   *bool          `json:"dry_run"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &sum); err != nil {
		t.Fatalf("summary %q: %v", lines[0], err)
	}
	if sum.Swept != 3 || sum.ByReason["heartbeat_timeout"] != 2 || sum.ByReason["deadline_exceeded"] != 1 ||
		sum.Batches != 2 || sum.Duration == nil || sum.DryRun == nil || *sum.DryRun {
		t.Fatalf("summary = %s", lines[0])
	}
	if !strings.HasPrefix(lines[0], `{"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1},"batches":2,"duration_ms":`) {
		t.Fatalf("summary does not follow the documented order: %s", lines[0])
	}
	// The dry run reported exactly what the real run then did.
	if !strings.Contains(dry.stdout, `"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1}`) || !strings.Contains(dry.stdout, `"dry_run":true`) {
		t.Fatalf("dry run summary %s differs from the real run", dry.stdout)
	}
	assertNoSecret(t, "--once", r)
	assertNoSecret(t, "--once --dry-run", dry)

	again := run(t, env, "--once", "--fail-on-stuck")
	if again.code != 0 || !strings.Contains(again.stdout, "marked 0 stuck") {
		t.Fatalf("second run: %s", again)
	}
	st := run(t, env, "status", "--output", "json")
	if st.code != 0 || !strings.Contains(st.stdout, `{"status":"stuck","rows":3}`) {
		t.Fatalf("status: %s", st)
	}
	assertNoSecret(t, "status", st)
	stText := run(t, env, "status")
	if stText.code != 0 || !strings.Contains(stText.stdout, "in_progress  1") {
		t.Fatalf("status text: %s", stText)
	}
	assertNoSecret(t, "config validate", run(t, env, "config", "validate"))
	assertNoSecret(t, "migrate version", run(t, env, "migrate", "version"))
}

func TestOnceUnreachableDatabase(t *testing.T) {
	t.Parallel()
	r := run(t, []string{"SWEEPER_DATABASE_URL=postgres://sweeper:" + secret + "@127.0.0.1:1/nope?connect_timeout=2"}, "--once")
	if r.code != 1 {
		t.Fatalf("unreachable database: %s", r)
	}
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "sweeper: ") {
		t.Fatalf("want a one-line error, got %q", r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stack trace: %s", r.stderr)
	}
	assertNoSecret(t, "unreachable database", r)
}

func TestSchemaBehindRefusesWithInstructions(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	env := []string{"SWEEPER_DATABASE_URL=" + db.URL}
	r := run(t, env, "--once")
	if r.code != 1 || !strings.Contains(r.stderr, "sweeper migrate up") {
		t.Fatalf("behind schema: %s", r)
	}
	if r := run(t, env, "migrate", "up"); r.code != 0 || !strings.Contains(r.stdout, "schema version 1") {
		t.Fatalf("migrate up: %s", r)
	}
	if _, err := db.Pool.Exec(context.Background(), `UPDATE sweeper_schema_migrations SET dirty = true`); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "--once", "--migrate-auto")
	if r.code != 1 || !strings.Contains(r.stderr, "dirty") || !strings.Contains(r.stderr, "sweeper migrate force") {
		t.Fatalf("dirty schema: %s", r)
	}
	if r := run(t, env, "migrate", "force", "1"); r.code != 0 {
		t.Fatalf("migrate force: %s", r)
	}
	if r := run(t, env, "--once"); r.code != 0 {
		t.Fatalf("after force: %s", r)
	}
	// migrate.auto migrates a fresh database.
	fresh := testdb.NewEmpty(t)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + fresh.URL, "SWEEPER_MIGRATE_AUTO=true"}, "--once"); r.code != 0 {
		t.Fatalf("auto migrate: %s", r)
	}
}

func TestBrokenConfigsExit2NamingTheKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	url := "SWEEPER_DATABASE_URL=postgres://u:" + secret + "@127.0.0.1:1/db"
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown yaml key", nil, []string{"--once", "--config", file("a.yaml", "sweep:\n  bath_size: 10\n")}, "sweep.bath_size"},
		{"unknown section", nil, []string{"--once", "--config", file("b.yaml", "sweeper:\n  x: 1\n")}, "sweeper"},
		{"bad duration in file", nil, []string{"--once", "--config", file("c.yaml", "sweep:\n  heartbeat_timeout: soon\n")}, "sweep.heartbeat_timeout"},
		{"wrong type in file", nil, []string{"--once", "--config", file("d.yaml", "sweep:\n  batch_size: [1]\n")}, "sweep.batch_size"},
		{"malformed yaml", nil, []string{"--once", "--config", file("e.yaml", "sweep: [\n")}, "e.yaml"},
		{"missing config file", nil, []string{"--once", "--config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"zero batch env", []string{"SWEEPER_SWEEP_BATCH_SIZE=0"}, []string{"--once"}, "sweep.batch_size"},
		{"unknown env var", []string{"SWEEPER_SWEEP_BATCHSIZE=10"}, []string{"--once"}, "SWEEPER_SWEEP_BATCHSIZE"},
		{"bad schedule env", []string{"SWEEPER_SWEEP_SCHEDULE=every now and then"}, []string{"--once"}, "sweep.schedule"},
		{"bad bool env", []string{"SWEEPER_MIGRATE_AUTO=maybe"}, []string{"--once"}, "migrate.auto"},
		{"bad level flag", nil, []string{"--once", "--log-level", "loud"}, "log.level"},
		{"bad format flag", nil, []string{"--once", "--log-format", "xml"}, "log.format"},
		{"bad listen flag", nil, []string{"--http-listen", "nowhere"}, "http.listen"},
		{"negative grace", nil, []string{"--shutdown-grace", "-1s"}, "shutdown_grace"},
		{"huge batch", nil, []string{"--once", "--sweep-batch-size", "1000000"}, "sweep.batch_size"},
		{"bad max conns", nil, []string{"--once", "--database-max-conns", "0"}, "database.max_conns"},
		{"bad notify channel", nil, []string{"--once", "--sweep-notify-channel", "no spaces; please"}, "sweep.notify_channel"},
		{"unknown flag", nil, []string{"--once", "--batch-size", "5"}, "batch-size"},
		{"bad output", nil, []string{"--once", "--output", "yaml"}, "--output"},
		{"unknown command", nil, []string{"sweep"}, `"sweep"`},
		{"migrate without verb", nil, []string{"migrate"}, "migrate up|down|version|force"},
		{"migrate force not a number", nil, []string{"migrate", "force", "two"}, "migrate force"},
		{"no database url", []string{"SWEEPER_DATABASE_URL="}, []string{"--once"}, "database.url"},
		{"bad database url", []string{"SWEEPER_DATABASE_URL=postgres://u:" + secret + "@[::1/db"}, []string{"--once"}, "database.url"},
		{"fail-on-stuck without once", nil, []string{"--fail-on-stuck"}, "--fail-on-stuck"},
	}
	for _, c := range cases {
		env := append([]string{url}, c.env...)
		r := run(t, env, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 2 naming %q, got %s", c.name, c.want, r)
		}
		assertNoSecret(t, c.name, r)
	}
	if r := run(t, []string{url}, "config", "validate", "--config", file("ok.yaml", "sweep:\n  batch_size: 10\n")); r.code != 0 || !strings.Contains(r.stdout, "sweep.batch_size=10") {
		t.Errorf("valid config: %s", r)
	}
	if r := run(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Exit codes") {
		t.Errorf("--help: %s", r)
	}
	if r := run(t, nil, "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "sweeper ") {
		t.Errorf("--version: %s", r)
	}
}

// daemon is a running `sweeper` daemon process.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

var addrRE = regexp.MustCompile(`"address":"([^"]+)"`)

// startDaemon starts the daemon and waits until it serves HTTP.
func startDaemon(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{done: make(chan error, 1)}
	d.cmd = exec.Command(binary, args...)
	d.cmd.Env = append(cleanEnv(), env...)
	pr, pw := io.Pipe()
	d.cmd.Stderr = pw
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.stderr.WriteString(line + "\n")
			d.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { d.done <- d.cmd.Wait(); _ = pw.Close() }()
	t.Cleanup(func() { _ = d.cmd.Process.Kill() })
	select {
	case d.addr = <-addr:
	case err := <-d.done:
		t.Fatalf("daemon exited before serving: %v\n%s", err, d.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not serve within 30s\n%s", d.logs())
	}
	return d
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

func (d *daemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDaemonMetricsHealthAndSIGTERM(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, seedSQL)
	d := startDaemon(t, []string{
		"SWEEPER_DATABASE_URL=" + withPassword(db.URL),
		"SWEEPER_HTTP_LISTEN=127.0.0.1:0",
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
	})
	// The first sweep runs at start: its result shows in /metrics.
	eventually(t, 20*time.Second, "a successful sweep in /metrics", func() bool {
		_, body := d.get(t, "/metrics")
		return strings.Contains(body, `sweeper_runs_total{result="ok"}`) && !strings.Contains(body, `sweeper_runs_total{result="ok"} 0`)
	})
	_, body := d.get(t, "/metrics")
	for _, series := range []string{
		`sweeper_swept_total{reason="heartbeat_timeout"} 2`,
		`sweeper_swept_total{reason="deadline_exceeded"} 1`,
		`sweeper_runs_total{result="error"} 0`,
		`sweeper_batches_total`,
		`sweeper_run_duration_seconds_bucket`,
		`sweeper_run_duration_seconds_count`,
		`sweeper_last_success_timestamp_seconds`,
		`sweeper_inflight_rows 1`,
		`sweeper_oldest_heartbeat_age_seconds`,
		`sweeper_ready`,
		`sweeper_build_info{commit=`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if strings.Contains(body, secret) {
		t.Fatal("/metrics shows the password")
	}
	if code, body := d.get(t, "/healthz"); code != 200 || body != "OK\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := d.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if !strings.Contains(d.logs(), `"msg":"sweep marked delegations stuck"`) || !strings.Contains(d.logs(), `"swept":3`) {
		t.Errorf("no info log of the sweep:\n%s", d.logs())
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, d.logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s of SIGTERM")
	}
	if strings.Contains(d.logs(), secret) {
		t.Fatalf("logs show the password:\n%s", d.logs())
	}
	if !strings.Contains(d.logs(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in logs:\n%s", d.logs())
	}
}

// SIGTERM while a large drain runs: the daemon exits 0, and every batch is
// whole: each stuck row has its event, and no event lacks its row change.
func TestDaemonSIGTERMDuringDrain(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'r' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, 60000) g`)
	d := startDaemon(t, []string{
		"SWEEPER_DATABASE_URL=" + db.URL,
		"SWEEPER_HTTP_LISTEN=127.0.0.1:0",
		"SWEEPER_SWEEP_BATCH_SIZE=200",
		"SWEEPER_SWEEP_MAX_BATCHES_PER_RUN=100000",
	})
	ctx := context.Background()
	eventually(t, 30*time.Second, "the drain to start", func() bool {
		var n int
		_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegations WHERE status = 'stuck'`).Scan(&n)
		return n > 0
	})
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM mid-drain: %v\n%s", err, d.logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s")
	}
	var stuck, events int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM delegations WHERE status = 'stuck'),
		(SELECT count(*) FROM delegation_events WHERE to_status = 'stuck')`).Scan(&stuck, &events); err != nil {
		t.Fatal(err)
	}
	if stuck != events || stuck%200 != 0 {
		t.Fatalf("%d stuck rows, %d stuck events: want equal, whole batches of 200", stuck, events)
	}
	if stuck == 60000 {
		t.Logf("the drain finished before SIGTERM arrived; the exit was still clean")
	}
}
