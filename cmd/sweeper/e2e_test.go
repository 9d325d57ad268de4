package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
)

// The tests in this file run the built binary, as users and CI do.

var binary string

func TestMain(m *testing.M) {
	bin, cleanup, err := testbin.Build("-race")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := testdb.Main(m)
	cleanup()
	os.Exit(code)
}

// run runs the built binary to its end, in a clean environment (no
// SWEEPER_* or DATABASE_URL from the test process) plus env.
func run(t *testing.T, env []string, args ...string) testbin.Result {
	t.Helper()
	return testbin.Run(t, binary, env, args...)
}

// withPassword returns the test database's URL with a password added, so
// tests can check it never shows. The local test server trusts every
// connection, so any password works.
func withPassword(url string) string {
	return strings.Replace(url, "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
}

const secret = "s3cr3t-hunter2"

func assertNoSecret(t *testing.T, what string, r testbin.Result) {
	t.Helper()
	if strings.Contains(r.Stdout, secret) || strings.Contains(r.Stderr, secret) {
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
	if dry.Code != 0 {
		t.Fatalf("dry run: %s", dry)
	}
	var stuck int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations WHERE status = 'stuck'`).Scan(&stuck); err != nil || stuck != 0 {
		t.Fatalf("dry run changed rows: %d stuck, %v", stuck, err)
	}

	r := run(t, env, "--once", "--output", "json", "--fail-on-stuck")
	if r.Code != 3 {
		t.Fatalf("--fail-on-stuck with stuck rows: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 1 {
		t.Fatalf("--output json printed %d lines: %q", len(lines), r.Stdout)
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
	if !strings.HasPrefix(lines[0], `{"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1,"stalled":0,"queue_timeout":0,"start_timeout":0},"batches":2,"duration_ms":`) {
		t.Fatalf("summary does not follow the documented order: %s", lines[0])
	}
	// The dry run reported exactly what the real run then did.
	if !strings.Contains(dry.Stdout, `"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1,"stalled":0,"queue_timeout":0,"start_timeout":0}`) || !strings.Contains(dry.Stdout, `"dry_run":true`) {
		t.Fatalf("dry run summary %s differs from the real run", dry.Stdout)
	}
	assertNoSecret(t, "--once", r)
	assertNoSecret(t, "--once --dry-run", dry)

	again := run(t, env, "--once", "--fail-on-stuck")
	if again.Code != 0 || !strings.Contains(again.Stdout, "marked 0 stuck") {
		t.Fatalf("second run: %s", again)
	}
	st := run(t, env, "status", "--output", "json")
	if st.Code != 0 || !strings.Contains(st.Stdout, `{"status":"stuck","rows":3}`) {
		t.Fatalf("status: %s", st)
	}
	assertNoSecret(t, "status", st)
	stText := run(t, env, "status")
	if stText.Code != 0 || !strings.Contains(stText.Stdout, "in_progress  1") {
		t.Fatalf("status text: %s", stText)
	}
	assertNoSecret(t, "config validate", run(t, env, "config", "validate"))
	assertNoSecret(t, "migrate version", run(t, env, "migrate", "version"))
}

func TestOnceUnreachableDatabase(t *testing.T) {
	t.Parallel()
	r := run(t, []string{"SWEEPER_DATABASE_URL=postgres://sweeper:" + secret + "@127.0.0.1:1/nope?connect_timeout=2"}, "--once")
	if r.Code != 1 {
		t.Fatalf("unreachable database: %s", r)
	}
	if lines := strings.Split(strings.TrimSpace(r.Stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "sweeper: ") {
		t.Fatalf("want a one-line error, got %q", r.Stderr)
	}
	if strings.Contains(r.Stderr, "goroutine") || strings.Contains(r.Stderr, "panic") {
		t.Fatalf("stack trace: %s", r.Stderr)
	}
	assertNoSecret(t, "unreachable database", r)
	// The database is named as config.DisplayDSN renders it.
	if !strings.Contains(r.Stderr, "connecting to database sweeper@127.0.0.1:1/nope: ") {
		t.Fatalf("the error does not name the database as user@host:port/db: %s", r.Stderr)
	}
}

func TestSchemaBehindRefusesWithInstructions(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	env := []string{"SWEEPER_DATABASE_URL=" + db.URL}
	r := run(t, env, "--once")
	if r.Code != 1 || !strings.Contains(r.Stderr, "sweeper migrate up") {
		t.Fatalf("behind schema: %s", r)
	}
	if r := run(t, env, "migrate", "up"); r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("schema version %d ", migrations.Latest)) {
		t.Fatalf("migrate up: %s", r)
	}
	if _, err := db.Pool.Exec(context.Background(), `UPDATE sweeper_schema_migrations SET dirty = true`); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "--once", "--migrate-auto")
	if r.Code != 1 || !strings.Contains(r.Stderr, "dirty") || !strings.Contains(r.Stderr, "sweeper migrate force") {
		t.Fatalf("dirty schema: %s", r)
	}
	if r := run(t, env, "migrate", "force", fmt.Sprint(migrations.Latest)); r.Code != 0 {
		t.Fatalf("migrate force: %s", r)
	}
	if r := run(t, env, "--once"); r.Code != 0 {
		t.Fatalf("after force: %s", r)
	}
	// migrate.auto migrates a fresh database.
	fresh := testdb.NewEmpty(t)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + fresh.URL, "SWEEPER_MIGRATE_AUTO=true"}, "--once"); r.Code != 0 {
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
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%s: want exit 2 naming %q, got %s", c.name, c.want, r)
		}
		assertNoSecret(t, c.name, r)
	}
	if r := run(t, []string{url}, "config", "validate", "--config", file("ok.yaml", "sweep:\n  batch_size: 10\n")); r.Code != 0 || !strings.Contains(r.Stdout, "sweep.batch_size=10") {
		t.Errorf("valid config: %s", r)
	}
	if r := run(t, nil, "--help"); r.Code != 0 || !strings.Contains(r.Stdout, "Exit codes") {
		t.Errorf("--help: %s", r)
	}
	if r := run(t, nil, "--version"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "sweeper ") {
		t.Errorf("--version: %s", r)
	}
}

// get fetches a path of the daemon's HTTP server, failing the test on error.
func get(t *testing.T, d *testbin.Daemon, path string) (int, string) {
	t.Helper()
	code, body, err := d.Get(path)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

func TestDaemonMetricsHealthAndSIGTERM(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, seedSQL)
	d := testbin.StartDaemon(t, binary, "sweeper", []string{
		"SWEEPER_DATABASE_URL=" + withPassword(db.URL),
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
	})
	// The first sweep runs at start: its result shows in /metrics.
	testbin.Eventually(t, 20*time.Second, "a successful sweep in /metrics", func() bool {
		_, body := get(t, d, "/metrics")
		return strings.Contains(body, `sweeper_runs_total{result="ok"}`) && !strings.Contains(body, `sweeper_runs_total{result="ok"} 0`)
	})
	_, body := get(t, d, "/metrics")
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
	if code, body := get(t, d, "/healthz"); code != 200 || body != "OK\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, d, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if !strings.Contains(d.Logs(), `"msg":"sweep marked delegations stuck"`) || !strings.Contains(d.Logs(), `"swept":3`) {
		t.Errorf("no info log of the sweep:\n%s", d.Logs())
	}

	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	if strings.Contains(d.Logs(), secret) {
		t.Fatalf("logs show the password:\n%s", d.Logs())
	}
	if !strings.Contains(d.Logs(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in logs:\n%s", d.Logs())
	}
}

// SIGTERM while a large drain runs: the daemon exits 0, and every batch is
// whole: each stuck row has its event, and no event lacks its row change.
func TestDaemonSIGTERMDuringDrain(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'r' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, 60000) g`)
	d := testbin.StartDaemon(t, binary, "sweeper", []string{
		"SWEEPER_DATABASE_URL=" + db.URL,
		"SWEEPER_SWEEP_BATCH_SIZE=200",
		"SWEEPER_SWEEP_MAX_BATCHES_PER_RUN=100000",
	})
	ctx := context.Background()
	testbin.Eventually(t, 30*time.Second, "the drain to start", func() bool {
		var n int
		_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegations WHERE status = 'stuck'`).Scan(&n)
		return n > 0
	})
	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM mid-drain\n%s", code, d.Logs())
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
