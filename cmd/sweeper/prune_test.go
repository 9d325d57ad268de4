package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// seedRetention makes two completed delegations 40 days old, one completed
// yesterday, one failed 100 days ago and one live; finished_at is backdated
// through updated_at with triggers off (test data: no writer can choose it).
func seedRetention(t *testing.T, db *testdb.DB) {
	t.Helper()
	ctx := context.Background()
	seedRaw(t, db, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES
		  ('old-1', 'c', 'w', 'in_progress', now()), ('old-2', 'c', 'w', 'in_progress', now()),
		  ('recent', 'c', 'w', 'in_progress', now()), ('failed', 'c', 'w', 'in_progress', now()),
		  ('live', 'c', 'w', 'in_progress', now());
		UPDATE delegations SET status = 'completed' WHERE delegation_id IN ('old-1', 'old-2', 'recent');
		UPDATE delegations SET status = 'failed' WHERE delegation_id = 'failed';`)
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica;
			UPDATE delegations SET updated_at = now() - interval '40 days' WHERE delegation_id IN ('old-1', 'old-2');
			UPDATE delegations SET updated_at = now() - interval '1 day' WHERE delegation_id = 'recent';
			UPDATE delegations SET updated_at = now() - interval '100 days' WHERE delegation_id = 'failed'`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

type pruneLine struct {
	Pruned       int            `json:"pruned"`
	EventsPruned int            `json:"events_pruned"`
	ByStatus     map[string]int `json:"by_status"`
	Batches      int            `json:"batches"`
	DurationMS   *int64         `json:"duration_ms"`
	DryRun       bool           `json:"dry_run"`
	ArchiveFiles int            `json:"archive_files"`
	ArchiveBytes int64          `json:"archive_bytes"`
}

func TestPruneCommand(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRetention(t, db)
	archive := filepath.Join(t.TempDir(), "archive")
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.URL), "SWEEPER_RETENTION_ARCHIVE_DIR=" + archive,
		"SWEEPER_RETENTION_BATCH_SIZE=1"}

	dry := run(t, env, "prune", "--dry-run", "--output", "json")
	var d pruneLine
	if dry.Code != 0 || json.Unmarshal([]byte(strings.TrimSpace(dry.Stdout)), &d) != nil {
		t.Fatalf("prune --dry-run: %s", dry)
	}
	if !d.DryRun || d.Pruned != 3 || d.ByStatus["completed"] != 2 || d.ByStatus["failed"] != 1 || d.EventsPruned != 6 {
		t.Fatalf("dry run line %s", dry.Stdout)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("after the dry run %d rows, %v", n, err)
	}

	r := run(t, env, "prune", "--output", "json")
	var p pruneLine
	if r.Code != 0 || json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &p) != nil {
		t.Fatalf("prune: %s", r)
	}
	if p.DryRun || p.Pruned != 3 || p.EventsPruned != 6 || p.Batches != 3 || p.ArchiveFiles != 3 || p.ArchiveBytes <= 0 ||
		p.DurationMS == nil || p.ByStatus["stuck"] != 0 {
		t.Fatalf("prune line %s", r.Stdout)
	}
	assertNoSecret(t, "prune", r)
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after prune %d rows, %v", n, err)
	}

	text := run(t, env, "prune")
	if text.Code != 0 || !strings.Contains(text.Stdout, "deleted 0 delegations") {
		t.Fatalf("second prune: %s", text)
	}

	v := run(t, nil, "archive", "verify", archive)
	if v.Code != 0 || !strings.Contains(v.Stdout, "3 files, 3 delegations, 6 events") {
		t.Fatalf("archive verify: %s", v)
	}
	files, _ := filepath.Glob(filepath.Join(archive, "*.jsonl.gz"))
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[0], data[:len(data)/2], 0o640); err != nil {
		t.Fatal(err)
	}
	if v := run(t, nil, "archive", "verify", archive, "--output", "json"); v.Code != 1 || !strings.Contains(v.Stdout, `"ok":false`) {
		t.Fatalf("archive verify of a truncated file: %s", v)
	}
}

func TestPruneUsageAndConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{[]string{"SWEEPER_DATABASE_URL=postgres://u@127.0.0.1:1/x", "SWEEPER_RETENTION_COMPLETED=5m"}, []string{"prune"}, 2, "retention.completed"},
		{[]string{"SWEEPER_DATABASE_URL=postgres://u@127.0.0.1:1/x", "SWEEPER_RETENTION_SCHEDULE=@adaptive"}, []string{"prune"}, 2, "retention.schedule"},
		{[]string{"SWEEPER_DATABASE_URL=postgres://u@127.0.0.1:1/x"}, []string{"prune", "now"}, 2, "prune takes no arguments"},
		{nil, []string{"prune"}, 2, "database.url"},
		{[]string{"SWEEPER_DATABASE_URL=postgres://u:" + secret + "@127.0.0.1:1/x?connect_timeout=2"}, []string{"prune"}, 1, "connecting to database"},
		{nil, []string{"archive"}, 2, "usage: sweeper archive verify DIR"},
		{nil, []string{"archive", "check", "x"}, 2, "usage: sweeper archive verify DIR"},
		{nil, []string{"archive", "verify", "/nonexistent/dir"}, 1, "reading archive directory"},
	} {
		r := run(t, c.env, c.args...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%v %v: %s; want exit %d and %q", c.env, c.args, r, c.code, c.want)
		}
		assertNoSecret(t, strings.Join(c.args, " "), r)
	}
}

// The daemon prunes on its schedule (first pass at start) and exports the
// pruner's metrics.
func TestDaemonPrunes(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRetention(t, db)
	d := testbin.StartDaemon(t, binary, "sweeper", []string{"SWEEPER_DATABASE_URL=" + db.URL})
	testbin.Eventually(t, 30*time.Second, "a prune pass", func() bool {
		m, _, err := d.Metrics()
		return err == nil && m[`sweeper_retention_runs_total{result="ok"}`] >= 1
	})
	m := d.MustMetrics(t)
	for series, want := range map[string]float64{
		`sweeper_retention_pruned_total{status="completed"}`: 2,
		`sweeper_retention_pruned_total{status="failed"}`:    1,
		`sweeper_retention_pruned_total{status="stuck"}`:     0,
		`sweeper_retention_events_pruned_total`:              6,
		`sweeper_retention_overdue_rows{status="completed"}`: 0,
		`sweeper_retention_runs_total{result="error"}`:       0,
	} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}
	if m["sweeper_retention_last_success_timestamp_seconds"] <= 0 {
		t.Errorf("no last success time")
	}
	if code := d.Stop(t, syscall.SIGTERM, 35*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	if !strings.Contains(d.Logs(), `"msg":"pruned delegations"`) {
		t.Errorf("no prune log line:\n%s", d.Logs())
	}
}
