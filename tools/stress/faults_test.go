package stress

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/pgserver"
	"github.com/tasksweeper/sweeper/internal/stress/report"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
)

// Faults: each test drains a ledger of stale rows with a sweeper process
// and breaks something in the middle of a batch. A test-only trigger makes
// each marked row take a millisecond or more, so that a batch is in flight
// most of the time and "mid-batch" is a state the test observes
// (pg_stat_activity shows the sweeper's backend running the sweep with a
// transaction id), not a guess.

// seedStale inserts n in_progress rows whose heartbeat is an hour old.
func seedStale(t *testing.T, dsn string, n int) {
	t.Helper()
	mustExec(t, dsn, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'stale-' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, $1) AS g`, n)
}

// slowSweep makes every row the sweep marks take perRow (at least 1ms).
func slowSweep(t *testing.T, dsn string, perRow time.Duration) {
	t.Helper()
	mustExec(t, dsn, fmt.Sprintf(`
CREATE FUNCTION stress_slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(%f);
    RETURN NEW;
END $$;
CREATE TRIGGER stress_slow_row BEFORE UPDATE OF status ON delegations
    FOR EACH ROW WHEN (NEW.status = 'stuck') EXECUTE FUNCTION stress_slow_row();`, perRow.Seconds()))
}

func fastSweep(t *testing.T, dsn string) {
	t.Helper()
	mustExec(t, dsn, `DROP TRIGGER stress_slow_row ON delegations`)
}

// waitCommitted waits until at least n rows are marked.
func waitCommitted(t *testing.T, dsn string, n int) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("%d rows marked", n), func() bool {
		got, err := queryInt(dsn, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
		return err == nil && got >= int64(n)
	})
}

// waitMidBatch waits until a sweeper backend on the database is running a
// sweep statement inside a transaction that has written (it has a
// transaction id), and returns its pid and transaction id.
func waitMidBatch(t *testing.T, dsn string) (pid int64, xid string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn := connect(t, dsn)
		for time.Now().Before(deadline) {
			err := conn.QueryRow(ctx, `SELECT pid, backend_xid::text FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'sweeper' AND state = 'active'
				  AND backend_xid IS NOT NULL AND query LIKE '%stuck_reason%' LIMIT 1`).Scan(&pid, &xid)
			if err == nil {
				cancel()
				return pid, xid
			}
			if ctx.Err() != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatal("no sweeper backend seen mid-batch within a minute")
		}
	}
}

// xactOutcome says what became of transaction xid and how many stuck events
// it wrote: a batch in flight when the fault hit either committed whole or
// wrote nothing.
func xactOutcome(t *testing.T, dsn, xid string, batch int) string {
	t.Helper()
	n := mustInt(t, dsn, `SELECT count(*) FROM delegation_events WHERE xmin::text = $1 AND to_status = 'stuck'`, xid)
	if n != 0 && n != int64(batch) {
		t.Fatalf("the batch in flight (xid %s) left %d stuck events: want 0 or %d", xid, n, batch)
	}
	var status string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := connect(t, dsn)
	if err := conn.QueryRow(ctx, `SELECT COALESCE(pg_xact_status($1::text::xid8), 'unknown')`, xid).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status == "committed" && n == 0 || status == "aborted" && n != 0 {
		t.Fatalf("transaction %s is %s with %d stuck events", xid, status, n)
	}
	return fmt.Sprintf("transaction %s %s, %d rows", xid, status, n)
}

// metricsValue reads one series, or -1 when the scrape fails.
func metricsValue(p *proc, series string) float64 {
	m, _, err := p.Metrics()
	if err != nil {
		return -1
	}
	return m[series]
}

func readyz(p *proc) int {
	code, _, err := p.Get("/readyz")
	if err != nil {
		return 0
	}
	return code
}

func daemonEnv(dsn string, batch int) []string {
	return []string{
		"SWEEPER_DATABASE_URL=" + dsn,
		"SWEEPER_SWEEP_SCHEDULE=@every 1s",
		fmt.Sprintf("SWEEPER_SWEEP_BATCH_SIZE=%d", batch),
		"SWEEPER_SWEEP_MAX_BATCHES_PER_RUN=100000",
		"SWEEPER_LOG_LEVEL=debug",
	}
}

// drained waits until all n rows are stuck.
func drained(t *testing.T, dsn string, n int, within time.Duration) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("all %d rows to be marked", n), func() bool {
		got, err := queryInt(dsn, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
		return err == nil && got == int64(n)
	})
}

// PostgreSQL killed (every server process SIGKILLed, as in a crash) while
// the daemon drains a large backlog, then started again: the daemon stays
// up, /readyz goes 503 then 200, the sweep resumes within two runs of the
// restart, acknowledged batches survive and none is half applied.
func TestFaultServerKilledDuringDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests do not run with -short")
	}
	t.Parallel()
	const batch = 100
	rows := 3000
	if full() {
		rows = 10000
	}
	srv := testdb.StartServer(t, pgserver.Options{
		Kinds:    []pgserver.Kind{pgserver.KindLocal},
		Settings: map[string]string{"synchronous_commit": "on"},
	})
	mustExec(t, srv.URL, `CREATE DATABASE stress`)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/stress"
	dsn := u.String()
	ctx := context.Background()
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	slowSweep(t, dsn, 3*time.Millisecond)
	seedStale(t, dsn, rows)

	d := startDaemon(t, "daemon", daemonEnv(withUser(t, dsn, "postgres", secret), batch))
	waitCommitted(t, dsn, 2*batch)
	// Committed before the kill: at least this many.
	committed := mustInt(t, dsn, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
	_, xid := waitMidBatch(t, dsn)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()

	// Down: the daemon stays up and says it is not ready, and keeps
	// running (and failing) its schedule.
	eventually(t, 30*time.Second, "/readyz to answer 503 while PostgreSQL is down", func() bool { return readyz(d) == 503 })
	eventually(t, 30*time.Second, "two failed runs while PostgreSQL is down", func() bool { return metricsValue(d, runsError) >= 2 })
	if d.Exited() {
		t.Fatalf("the daemon exited when PostgreSQL died: %v\n%s", d.ExitErr(), d.Logs())
	}
	down := time.Since(killedAt)

	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := srv.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	m := d.MustMetrics(t)
	runsAtRestart := m[runsOK] + m[runsError]

	// Acknowledged batches survived the crash.
	atRestart := mustInt(t, dsn, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
	if atRestart < committed {
		t.Fatalf("%d rows stuck after the restart, %d were committed before the kill", atRestart, committed)
	}

	// Up again: sweeping resumes (a new batch commits) within two schedule
	// intervals, counted in runs rather than seconds: at most one run (the
	// one in flight at the restart) ends before the run that resumes.
	eventually(t, time.Minute, "a batch committed after the restart", func() bool {
		n, err := queryInt(dsn, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
		return err == nil && n > atRestart
	})
	resumed := time.Since(restartedAt)
	m = d.MustMetrics(t)
	if ended := m[runsOK] + m[runsError] - runsAtRestart; ended > 1 {
		t.Errorf("%v runs ended after the restart before one resumed sweeping: want at most 1", ended)
	}
	eventually(t, time.Minute, "/readyz to answer 200 after the restart", func() bool { return readyz(d) == 200 })
	outcome := xactOutcome(t, dsn, xid, batch)
	drained(t, dsn, rows, 3*time.Minute)
	txs, stuck := batchCheck(t, dsn, batch, true)
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	assertNoSecret(t, "daemon logs", d.Logs())
	t.Logf("killed with %d of %d rows marked; the batch in flight: %s; down %s; first batch %s after the restart; %d batches of %d",
		committed, rows, outcome, down.Round(time.Millisecond), resumed.Round(time.Millisecond), txs, batch)
	record(t, report.Figures{report.FaultsSurvived: 1, "rows": stuck, "batches": txs,
		"resume_ms": resumed.Milliseconds(), "failed_runs": int64(m[runsError])})
}

// A sweeper backend terminated by pg_terminate_backend in the middle of a
// batch: the run fails and is counted, the batch is rolled back whole, the
// daemon stays up and the next run goes on.
func TestFaultBackendTerminatedMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests do not run with -short")
	}
	t.Parallel()
	const rows, batch = 3000, 100
	db := testdb.New(t)
	slowSweep(t, db.URL, time.Millisecond)
	seedStale(t, db.URL, rows)
	d := startDaemon(t, "daemon", daemonEnv(withUser(t, db.URL, "postgres", secret), batch))
	waitCommitted(t, db.URL, batch)
	pid, xid := waitMidBatch(t, db.URL)
	if ok := mustInt(t, db.URL, `SELECT count(*) FROM pg_terminate_backend($1) AS t WHERE t`, pid); ok != 1 {
		t.Fatalf("pg_terminate_backend(%d) failed", pid)
	}
	eventually(t, 30*time.Second, "the failed run in sweeper_runs_total", func() bool { return metricsValue(d, runsError) >= 1 })
	drained(t, db.URL, rows, 3*time.Minute)
	if d.Exited() {
		t.Fatalf("the daemon exited: %v\n%s", d.ExitErr(), d.Logs())
	}
	eventually(t, 30*time.Second, "/readyz 200 after the next run", func() bool { return readyz(d) == 200 })
	outcome := xactOutcome(t, db.URL, xid, batch)
	txs, stuck := batchCheck(t, db.URL, batch, true)
	logs := d.Logs()
	if !strings.Contains(logs, `"msg":"sweep failed"`) || !strings.Contains(logs, "terminating connection due to administrator command") {
		t.Errorf("the failed run is not logged with its cause:\n%s", logs)
	}
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	assertNoSecret(t, "daemon logs", d.Logs())
	t.Logf("terminated backend %d mid-batch: %s; %d batches of %d", pid, outcome, txs, batch)
	record(t, report.Figures{report.FaultsSurvived: 1, "rows": stuck, "batches": txs})
}

// A statement timeout: the daemon's batch outlasts statement_timeout (set
// in the DSN's options): the run fails, is logged and counted as an error,
// nothing is marked; once the batch is fast again, the next run succeeds.
// And `sweeper --once` under statement_timeout=1ms fails with exit 1 and
// changes nothing; with normal settings it drains.
func TestFaultStatementTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests do not run with -short")
	}
	t.Parallel()
	const rows, batch = 1500, 500
	db := testdb.New(t)
	slowSweep(t, db.URL, 3*time.Millisecond) // a batch takes 1.5s or more
	seedStale(t, db.URL, rows)
	dsn := withUser(t, db.URL, "postgres", secret)

	// --once with a 1ms statement timeout.
	once := run(t, []string{"SWEEPER_DATABASE_URL=" + withQuery(t, dsn, "options", "-c statement_timeout=1ms")}, "--once")
	if once.Code != 1 || !strings.Contains(once.Stderr, "statement timeout") {
		t.Fatalf("--once under statement_timeout=1ms: want exit 1 naming the statement timeout: %s", once)
	}
	assertNoSecret(t, "--once under a statement timeout", once.Stdout+once.Stderr)
	if n := mustInt(t, db.URL, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`); n != 0 {
		t.Fatalf("a timed-out --once left %d stuck events", n)
	}

	// The daemon with a 1s statement timeout: every batch times out.
	d := startDaemon(t, "daemon", daemonEnv(withQuery(t, dsn, "options", "-c statement_timeout=1s"), batch))
	eventually(t, time.Minute, "a run that fails on the statement timeout", func() bool { return metricsValue(d, runsError) >= 1 })
	eventually(t, 30*time.Second, "/readyz 503 after the failed run", func() bool { return readyz(d) == 503 })
	if !strings.Contains(d.Logs(), "canceling statement due to statement timeout") || !strings.Contains(d.Logs(), `"msg":"sweep failed"`) {
		t.Fatalf("the timed-out run is not logged with its cause:\n%s", d.Logs())
	}
	if n := mustInt(t, db.URL, `SELECT count(*) FROM delegations WHERE status = 'stuck'`); n != 0 {
		t.Fatalf("timed-out batches left %d rows stuck", n)
	}
	ok := metricsValue(d, runsOK)
	fastSweep(t, db.URL)
	eventually(t, time.Minute, "a successful run once batches are fast", func() bool { return metricsValue(d, runsOK) > ok })
	drained(t, db.URL, rows, 2*time.Minute)
	eventually(t, 30*time.Second, "/readyz 200", func() bool { return readyz(d) == 200 })
	txs, stuck := batchCheck(t, db.URL, batch, true)
	failed := metricsValue(d, runsError)
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, d.Logs())
	}
	assertNoSecret(t, "daemon logs", d.Logs())

	// And --once with normal settings after a timed-out one.
	db2 := testdb.New(t)
	seedStale(t, db2.URL, rows)
	dsn2 := withUser(t, db2.URL, "postgres", secret)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + withQuery(t, dsn2, "options", "-c statement_timeout=1ms")}, "--once"); r.Code != 1 {
		t.Fatalf("--once under statement_timeout=1ms: %s", r)
	}
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + dsn2, "SWEEPER_SWEEP_BATCH_SIZE=500"}, "--once", "--output", "json"); r.Code != 0 || !strings.Contains(r.Stdout, `"swept":1500`) {
		t.Fatalf("--once with normal settings: %s", r)
	}
	batchCheck(t, db2.URL, batch, true)
	t.Logf("daemon: %v runs failed on the timeout, then %d batches of %d", failed, txs, batch)
	record(t, report.Figures{report.FaultsSurvived: 2, "rows": stuck, "batches": txs, "timed_out_runs": int64(failed)})
}

// The daemon killed with SIGKILL in the middle of a batch: the batch in
// flight rolls back (or had committed) whole, and a later run finishes the
// drain with every row marked once.
func TestFaultSIGKILLMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests do not run with -short")
	}
	t.Parallel()
	const rows, batch = 2000, 200
	db := testdb.New(t)
	slowSweep(t, db.URL, time.Millisecond)
	seedStale(t, db.URL, rows)
	dsn := withUser(t, db.URL, "postgres", secret)
	d := startDaemon(t, "daemon", daemonEnv(dsn, batch))
	waitCommitted(t, db.URL, batch)
	_, xid := waitMidBatch(t, db.URL)
	if code := d.Stop(t, syscall.SIGKILL, 30*time.Second); code != -1 {
		t.Fatalf("exit %d after SIGKILL, want killed by the signal", code)
	}
	// PostgreSQL ends the orphaned backend; its transaction never commits.
	eventually(t, time.Minute, "the killed sweeper's backends to end", func() bool {
		n, err := queryInt(db.URL, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sweeper'`)
		return err == nil && n == 0
	})
	outcome := xactOutcome(t, db.URL, xid, batch)
	before, _ := batchCheck(t, db.URL, batch, true)
	if r := run(t, []string{"SWEEPER_DATABASE_URL=" + dsn, fmt.Sprintf("SWEEPER_SWEEP_BATCH_SIZE=%d", batch)}, "--once"); r.Code != 0 {
		t.Fatalf("--once after the kill: %s", r)
	}
	drained(t, db.URL, rows, time.Second)
	txs, stuck := batchCheck(t, db.URL, batch, true)
	t.Logf("killed mid-batch: %s; %d whole batches before the kill, %d in all", outcome, before, txs)
	record(t, report.Figures{report.FaultsSurvived: 1, "rows": stuck, "batches": txs})
}

// SIGTERM in the middle of a batch: the batch in flight commits whole, the
// daemon stops between batches and exits 0.
func TestFaultSIGTERMMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests do not run with -short")
	}
	t.Parallel()
	const rows, batch = 2000, 200
	db := testdb.New(t)
	slowSweep(t, db.URL, time.Millisecond)
	seedStale(t, db.URL, rows)
	d := startDaemon(t, "daemon", daemonEnv(withUser(t, db.URL, "postgres", secret), batch))
	waitCommitted(t, db.URL, batch)
	_, xid := waitMidBatch(t, db.URL)
	if code := d.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("exit %d after SIGTERM mid-batch\n%s", code, d.Logs())
	}
	if !strings.Contains(d.Logs(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", d.Logs())
	}
	if n := mustInt(t, db.URL, `SELECT count(*) FROM delegation_events WHERE xmin::text = $1`, xid); n != batch {
		t.Fatalf("the batch in flight at SIGTERM (xid %s) wrote %d events: want it committed whole (%d)", xid, n, batch)
	}
	txs, stuck := batchCheck(t, db.URL, batch, true)
	if stuck == rows {
		t.Logf("the drain had finished by the time SIGTERM was handled")
	}
	assertNoSecret(t, "daemon logs", d.Logs())
	t.Logf("SIGTERM mid-batch: the batch in flight committed; %d whole batches, %d of %d rows marked", txs, stuck, rows)
	record(t, report.Figures{report.FaultsSurvived: 1, "rows": stuck, "batches": txs})
}
