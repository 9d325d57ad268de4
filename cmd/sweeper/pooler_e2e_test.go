package main_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/testbin"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// The binary behind a real PgBouncer in transaction mode with one server
// connection, which every process in turn gets.

// In the default mode the second process finds the first one's prepared
// statement on the shared server connection (42P05); the error says which
// key to set.
func TestPgBouncerDefaultModeErrorNamesTheKey(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b))}
	_ = run(t, env, "status") // leaves its prepared statements on the server connection
	r := run(t, env, "status")
	if r.Code != 1 || !strings.Contains(r.Stderr, "SQLSTATE 42P05") ||
		!strings.Contains(r.Stderr, "set database.pooler: transaction, SWEEPER_DATABASE_POOLER=transaction") {
		t.Fatalf("status through pgbouncer in the default mode, second process: %s", r)
	}
	assertNoSecret(t, "status", r)
}

// With SWEEPER_DATABASE_POOLER=transaction: --once, status, migrate (refused
// without database.migrate_url, done with it) and the daemon work.
func TestPgBouncerTransactionModeBinary(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedRaw(t, db, seedSQL)
	b := testdb.StartPgBouncer(t, pgserver.PgBouncerOptions{PoolSize: 1})
	env := []string{"SWEEPER_DATABASE_URL=" + withPassword(db.ViaPgBouncer(t, b)), "SWEEPER_DATABASE_POOLER=transaction"}

	for range 2 { // a second process reuses the server connection
		if st := run(t, env, "status", "--output", "json"); st.Code != 0 || !strings.Contains(st.Stdout, `"total":5`) {
			t.Fatalf("status: %s", st)
		}
	}
	once := run(t, env, "--once", "--output", "json")
	if once.Code != 0 || !strings.HasPrefix(once.Stdout, `{"swept":3,"by_reason":{"heartbeat_timeout":2,"deadline_exceeded":1}`) {
		t.Fatalf("--once: %s", once)
	}
	if again := run(t, env, "--once"); again.Code != 0 || !strings.Contains(again.Stdout, "marked 0 stuck") {
		t.Fatalf("second --once: %s", again)
	}

	mig := run(t, env, "migrate", "up")
	if mig.Code != 2 || !strings.Contains(mig.Stderr, "database.migrate_url") || !strings.Contains(mig.Stderr, "session advisory lock") {
		t.Fatalf("migrate up through a transaction pooler without database.migrate_url: %s", mig)
	}
	withDirect := append([]string{"SWEEPER_DATABASE_MIGRATE_URL=" + withPassword(db.URL)}, env...)
	if mig := run(t, withDirect, "migrate", "up"); mig.Code != 0 || !strings.Contains(mig.Stdout, "schema version") {
		t.Fatalf("migrate up with database.migrate_url: %s", mig)
	}
	assertNoSecret(t, "migrate up", mig)

	seedRaw(t, db, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('stale-3', 'c', 'w', 'in_progress', now() - interval '1 hour')`)
	d := testbin.StartDaemon(t, binary, "sweeper", append([]string{"SWEEPER_SWEEP_SCHEDULE=@every 1s"}, env...))
	testbin.Eventually(t, 20*time.Second, "a sweep through pgbouncer in /metrics", func() bool {
		_, body := get(t, d, "/metrics")
		return strings.Contains(body, `sweeper_swept_total{reason="heartbeat_timeout"} 1`)
	})
	if code, body := get(t, d, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if _, body := get(t, d, "/metrics"); !strings.Contains(body, `sweeper_runs_total{result="error"} 0`) {
		t.Errorf("failed runs through pgbouncer:\n%s", d.Logs())
	}
	if code := d.Stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	if strings.Contains(d.Logs(), secret) {
		t.Fatalf("logs show the password:\n%s", d.Logs())
	}
}
