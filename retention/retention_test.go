package retention_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/retention"
	"github.com/tasksweeper/sweeper/sweep"
)

func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func one[T any](t *testing.T, pool *pgxpool.Pool, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func ids(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// finish creates delegation id and moves it, through real transitions (so
// with events: queued, in_progress, then the terminal status), to status,
// then backdates its finished_at by age. The backdating is test data: done
// with triggers off (session_replication_role, superuser only) on updated_at,
// which finished_at is computed from, as no writer can choose either.
func finish(t *testing.T, pool *pgxpool.Pool, id, status string, age time.Duration) {
	t.Helper()
	exec(t, pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ($1, 'c', 'w')`, id)
	exec(t, pool, `UPDATE delegations SET status = 'in_progress' WHERE delegation_id = $1`, id)
	if status == "in_progress" {
		return
	}
	reason := map[string]any{"stuck": "heartbeat_timeout"}[status]
	exec(t, pool, `UPDATE delegations SET status = $2, stuck_reason = $3 WHERE delegation_id = $1`, id, status, reason)
	backdate(t, pool, id, age)
}

func backdate(t *testing.T, pool *pgxpool.Pool, id string, age time.Duration) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE delegations SET updated_at = now() - make_interval(secs => $2) WHERE delegation_id = $1`,
			id, age.Seconds())
		return err
	})
	if err != nil {
		t.Fatalf("backdating %s: %v", id, err)
	}
}

func newPruner(t *testing.T, pool *pgxpool.Pool, cfg retention.Config) *retention.Pruner {
	t.Helper()
	p, err := retention.New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const day = retention.Day

// seedPolicyLedger makes, around the default retentions (30d completed, 90d
// failed and stuck), rows just inside and just past each, and live rows
// whose created_at is years old. It returns the ids that must be pruned.
func seedPolicyLedger(t *testing.T, pool *pgxpool.Pool) (pruned []string) {
	t.Helper()
	finish(t, pool, "c-old", "completed", 31*day)
	finish(t, pool, "c-older", "completed", 400*day)
	finish(t, pool, "c-young", "completed", 29*day)
	finish(t, pool, "f-old", "failed", 91*day)
	finish(t, pool, "f-young", "failed", 89*day)
	finish(t, pool, "s-old", "stuck", 91*day)
	finish(t, pool, "s-young", "stuck", 31*day)
	finish(t, pool, "live", "in_progress", 0)
	exec(t, pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, created_at, deadline) VALUES
		('ancient-queued', 'c', 'w', 'queued', now() - interval '3 years', now() + interval '1 hour'),
		('ancient-dispatched', 'c', 'w', 'dispatched', now() - interval '3 years', now() + interval '1 hour')`)
	return []string{"c-old", "c-older", "f-old", "s-old"}
}

func TestPruneRemovesExactlyTheEligibleRowsAndTheirEvents(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	want := seedPolicyLedger(t, db.Pool)
	all := ids(t, db.Pool, `SELECT delegation_id FROM delegations`)
	eventsBefore := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events`)
	prunedEvents := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE delegation_id = ANY($1)`, want)

	p := newPruner(t, db.Pool, retention.Config{BatchSize: 1}) // one row per batch: the loop is exercised
	res, err := p.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pruned != 4 || res.ByStatus["completed"] != 2 || res.ByStatus["failed"] != 1 || res.ByStatus["stuck"] != 1 {
		t.Errorf("result %+v, want 2 completed, 1 failed, 1 stuck", res)
	}
	if res.EventsPruned != prunedEvents || prunedEvents != 12 {
		t.Errorf("events pruned %d, want %d (12)", res.EventsPruned, prunedEvents)
	}
	if res.Batches != 4 {
		t.Errorf("batches %d, want 4 (one row each)", res.Batches)
	}
	left := ids(t, db.Pool, `SELECT delegation_id FROM delegations`)
	var kept []string
	for _, id := range all {
		if !slices.Contains(want, id) {
			kept = append(kept, id)
		}
	}
	if !slices.Equal(left, kept) {
		t.Fatalf("left %v, want %v", left, kept)
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events`); n != eventsBefore-prunedEvents {
		t.Errorf("%d events left, want %d", n, eventsBefore-prunedEvents)
	}
	if orphans := ids(t, db.Pool, `SELECT DISTINCT delegation_id FROM delegation_events e
		WHERE NOT EXISTS (SELECT 1 FROM delegations d WHERE d.delegation_id = e.delegation_id)`); len(orphans) > 0 {
		t.Errorf("events left without their delegation: %v", orphans)
	}
	for _, s := range retention.Statuses {
		if res.OverdueRows[s] != 0 || res.OverdueSeconds[s] != 0 {
			t.Errorf("overdue %s after a full pass: %d rows, %fs", s, res.OverdueRows[s], res.OverdueSeconds[s])
		}
	}

	// A second pass finds nothing.
	if res, err := p.RunOnce(ctx); err != nil || res.Pruned != 0 || res.Batches != 0 {
		t.Fatalf("second pass: %+v, %v", res, err)
	}
}

func TestKeepForeverAndShorterRetention(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedPolicyLedger(t, db.Pool)
	p := newPruner(t, db.Pool, retention.Config{
		Completed: retention.KeepForever, Failed: 10 * day, Stuck: retention.KeepForever,
	})
	res, err := p.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Pruned != 2 || res.ByStatus["failed"] != 2 {
		t.Fatalf("result %+v, want the two failed rows only", res)
	}
	if _, ok := res.OverdueRows["completed"]; ok {
		t.Errorf("overdue reported for a status kept for ever: %+v", res.OverdueRows)
	}
	if left := ids(t, db.Pool, `SELECT delegation_id FROM delegations WHERE status = 'failed'`); len(left) != 0 {
		t.Errorf("failed rows left: %v", left)
	}
}

func TestDryRunCountsAndDeletesNothing(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedPolicyLedger(t, db.Pool)
	before := one[int](t, db.Pool, `SELECT count(*) FROM delegations`)
	p := newPruner(t, db.Pool, retention.Config{DryRun: true})
	res, err := p.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Pruned != 4 || res.EventsPruned != 12 || res.ByStatus["completed"] != 2 {
		t.Fatalf("dry run %+v, want 4 rows (2 completed) and 12 events", res)
	}
	if res.OverdueRows["completed"] != 2 || res.OverdueSeconds["completed"] < float64((370*day).Seconds()) {
		t.Errorf("overdue completed %d rows, %fs; want 2, oldest about 370 days", res.OverdueRows["completed"], res.OverdueSeconds["completed"])
	}
	if after := one[int](t, db.Pool, `SELECT count(*) FROM delegations`); after != before {
		t.Fatalf("dry run deleted %d rows", before-after)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]retention.Config{
		"retention under an hour": {Completed: time.Minute},
		"negative batch":          {BatchSize: -1},
		"bad schedule":            {Schedule: "every hour"},
		// cron.ParseStandard panics on this one; New must not.
		"time zone alone":  {Schedule: "CRON_TZ=UTC"},
		"sub-second every": {Schedule: "@every 1500ms"},
	} {
		if _, err := retention.New(nil, cfg); err == nil || !strings.HasPrefix(err.Error(), "retention: ") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	p, err := retention.New(nil, retention.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Config(); c.Completed != 30*day || c.Failed != 90*day || c.Stuck != 90*day || c.BatchSize != 1000 || c.Schedule != "@every 1h" {
		t.Errorf("defaults %+v", c)
	}
}

// What the database refuses, whoever asks (here a superuser): deleting a
// live row, touching the audit log directly, truncating; what it allows:
// deleting a terminal row, which takes its events with it.
func TestDatabaseRefusesEveryOtherDelete(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedPolicyLedger(t, db.Pool)
	ctx := context.Background()
	for _, c := range []struct{ sql, constraint string }{
		{`DELETE FROM delegations WHERE delegation_id = 'live'`, "delegations_delete_terminal_only"},
		{`DELETE FROM delegations WHERE delegation_id = 'ancient-queued'`, "delegations_delete_terminal_only"},
		{`DELETE FROM delegations`, "delegations_delete_terminal_only"},
		{`DELETE FROM delegation_events WHERE delegation_id = 'c-old'`, "delegation_events_append_only"},
		{`DELETE FROM delegation_events WHERE delegation_id = 'nobody'`, "delegation_events_append_only"},
		{`UPDATE delegation_events SET actor = 'me'`, "delegation_events_append_only"},
		{`TRUNCATE delegations`, "delegations_no_truncate"},
		{`TRUNCATE delegation_events`, "delegation_events_no_truncate"},
		{`UPDATE delegations SET updated_at = now() - interval '1 year' WHERE delegation_id = 'c-young'`, "delegations_terminal_frozen"},
		{`SELECT * FROM sweeper_prune(ARRAY['c-young'], interval '1 minute', NULL, NULL)`, ""},
	} {
		_, err := db.Pool.Exec(ctx, c.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.ConstraintName != c.constraint {
			t.Errorf("%s: err = %v, want a violation of %q", c.sql, err, c.constraint)
		}
	}
	// No writer sets finished_at.
	_, err := db.Pool.Exec(ctx, `UPDATE delegations SET finished_at = now() WHERE delegation_id = 'live'`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "428C9" { // generated_always
		t.Errorf("a writer set finished_at: %v", err)
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegations`); n != 10 {
		t.Fatalf("%d rows left after refused deletes, want 10", n)
	}
	// The sanctioned path, by hand: a terminal row, with its events.
	exec(t, db.Pool, `DELETE FROM delegations WHERE delegation_id = 'c-young'`)
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE delegation_id = 'c-young'`); n != 0 {
		t.Errorf("%d events of a deleted delegation left", n)
	}
}

// finished_at is set by the database for every writer, once: through the
// ledger, the sweep and raw SQL alike.
func TestFinishedAtSetByTheDatabase(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "via-ledger", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SetStatus(ctx, "via-ledger", ledger.StatusCompleted, ledger.Change{Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES
		('via-sweep', 'c', 'w', 'in_progress', now() - interval '1 hour'),
		('inserted-done', 'c', 'w', 'failed', NULL)`)
	// A terminal row inserted with an old updated_at still finishes now.
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, updated_at) VALUES
		('forged', 'c', 'w', 'completed', now() - interval '1 year')`)
	s, err := sweep.New(db.Pool, sweep.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.RunOnce(ctx); err != nil || res.Swept != 1 {
		t.Fatalf("sweep: %+v, %v", res, err)
	}
	wrong := ids(t, db.Pool, `SELECT delegation_id FROM delegations
		WHERE finished_at IS NULL OR finished_at <> updated_at OR finished_at < now() - interval '1 minute'`)
	if len(wrong) > 0 {
		t.Fatalf("finished_at not the moment of the terminal move for %v", wrong)
	}
}

func TestArchiveBeforeDelete(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	want := seedPolicyLedger(t, db.Pool)
	dir := filepath.Join(t.TempDir(), "archive")
	p := newPruner(t, db.Pool, retention.Config{ArchiveDir: dir, BatchSize: 2})
	res, err := p.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pruned != 4 || res.ArchiveFiles != 3 || res.ArchiveBytes <= 0 {
		t.Fatalf("result %+v, want 4 rows in 3 files (2 completed, 1 failed, 1 stuck)", res)
	}
	rep, err := retention.VerifyArchive(dir)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	if rep.Files != 3 || rep.Delegations != 4 || rep.Events != 12 || rep.Bytes != res.ArchiveBytes || rep.Duplicates != 0 {
		t.Errorf("report %+v, want 3 files, 4 delegations, 12 events, %d bytes", rep, res.ArchiveBytes)
	}
	if left := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE delegation_id = ANY($1)`, want); left != 0 {
		t.Errorf("%d archived rows left in the database", left)
	}

	// A crash between a file's fsync and its batch's commit leaves the
	// batch in the database, archived again by the next pass: the same
	// delegations in two files. Verify counts them as duplicates, not
	// problems; a file left under its temporary name is listed apart.
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl.gz"))
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	dup := strings.Replace(files[0], "sweeper-prune-", "sweeper-prune-0", 1)
	if err := os.WriteFile(dup, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sweeper-prune-x.jsonl.gz.tmp"), data[:10], 0o640); err != nil {
		t.Fatal(err)
	}
	rep, err = retention.VerifyArchive(dir)
	if err != nil || !rep.OK() || rep.Duplicates == 0 || len(rep.Incomplete) != 1 {
		t.Fatalf("with a duplicate and a leftover: %+v, %v", rep, err)
	}

	// A truncated file is a problem that names it.
	if err := os.WriteFile(dup, data[:len(data)-8], 0o640); err != nil {
		t.Fatal(err)
	}
	rep, _ = retention.VerifyArchive(dir)
	if rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), filepath.Base(dup)) {
		t.Fatalf("truncated file not reported: %+v", rep)
	}
}

func TestVerifyArchiveReportsBadLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := retention.WriteArchive(dir, "completed", []string{
		`{"delegation_id": "a", "status": "completed", "finished_at": "2026-01-01T00:00:00Z", "events": [{"id": 1, "delegation_id": "a"}]}`,
		`not json`,
		`{"delegation_id": "b", "status": "in_progress", "finished_at": null, "events": []}`,
		`{"delegation_id": "c", "status": "failed", "finished_at": "2026-01-01T00:00:00Z", "events": [{"id": 2, "delegation_id": "other"}]}`,
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := retention.VerifyArchive(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(rep.Problems, "\n")
	for _, want := range []string{"line 2: not a JSON object", `line 3: delegation "b": status is not terminal`, `line 4: delegation "c": event 0`} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if len(rep.Problems) != 3 || rep.Delegations != 3 {
		t.Errorf("report %+v", rep)
	}
	if rep, err := retention.VerifyArchive(t.TempDir()); err != nil || rep.OK() {
		t.Errorf("an empty directory verifies: %+v, %v", rep, err)
	}
	if _, err := retention.VerifyArchive(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory verifies")
	}
}

// Pruners, a sweeper and heartbeating workers at once: every eligible row
// goes, with its events; no live row is touched; no event is orphaned.
func TestConcurrentPruneSweepAndHeartbeats(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	const n = 300
	exec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'old-' || g, 'c', 'w', 'in_progress', now() FROM generate_series(1, $1) g
		UNION ALL
		SELECT 'live-' || g, 'c', 'w', 'in_progress', now() FROM generate_series(1, $1) g
		UNION ALL
		SELECT 'stale-' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, $1) g`, n)
	exec(t, db.Pool, `UPDATE delegations SET status = 'completed' WHERE delegation_id LIKE 'old-%'`)
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica;
			UPDATE delegations SET updated_at = now() - interval '31 days' WHERE delegation_id LIKE 'old-%'`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(db.Pool)
	s, err := sweep.New(db.Pool, sweep.Config{BatchSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	results := make(chan retention.Result, 3)
	for i := range 3 {
		p := newPruner(t, db.Pool, retention.Config{BatchSize: 20 + i})
		wg.Go(func() {
			res, err := p.RunOnce(ctx)
			errs <- err
			results <- res
		})
	}
	wg.Go(func() {
		for range 5 {
			if _, err := s.RunOnce(ctx); err != nil {
				errs <- err
			}
		}
	})
	for w := range 2 {
		wg.Go(func() {
			var live []string
			for i := w; i < n; i += 2 {
				live = append(live, fmt.Sprintf("live-%d", i+1))
			}
			for range 20 {
				if _, err := l.HeartbeatMany(ctx, live); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for r := range results {
		total += r.Pruned
	}
	if total != n {
		t.Errorf("pruners deleted %d rows together, want %d", total, n)
	}
	counts := map[string]int{}
	rows, err := db.Pool.Query(ctx, `SELECT split_part(delegation_id, '-', 1) || '/' || status, count(*) FROM delegations GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var c int
		if err := rows.Scan(&k, &c); err != nil {
			t.Fatal(err)
		}
		counts[k] = c
	}
	rows.Close()
	if counts["old/completed"] != 0 || counts["live/in_progress"] != n || counts["stale/stuck"] != n || len(counts) != 2 {
		t.Errorf("rows by kind/status: %v; want no old rows, %d live in_progress, %d stale stuck", counts, n, n)
	}
	if orphans := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events e
		WHERE NOT EXISTS (SELECT 1 FROM delegations d WHERE d.delegation_id = e.delegation_id)`); orphans != 0 {
		t.Errorf("%d orphaned events", orphans)
	}
}

// Heartbeats stay HOT updates with the retention schema: finished_at and
// its index change nothing a heartbeat writes. Read from pg_stat_user_tables
// after the heartbeats' transactions commit.
//
// Not parallel: a HOT update needs room on the row's page, which page
// pruning makes by removing the versions no transaction can see any more;
// the other tests' transactions on the same server held that back (measured
// here: 12% to 94% HOT run in parallel, 98% alone).
func TestHeartbeatsStayHOT(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'w-' || g, 'c', 'w', 'in_progress', now() FROM generate_series(1, 100) g`)
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	stats := func() (upd, hot int64) {
		t.Helper()
		// Flush this backend's counters and read them without a cached
		// snapshot.
		if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'delegations'`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		return upd, hot
	}
	// Heartbeats in their own transactions, as workers send them, on this
	// connection (whose counters are flushed above). A heartbeat that moves
	// a row into a new minute changes heartbeat_minute, which is indexed, so
	// it is not HOT: a round that crossed a minute may be non-HOT, every
	// other heartbeat must be HOT.
	l := ledger.New(conn)
	all := make([]string, 100)
	for i := range all {
		all[i] = fmt.Sprintf("w-%d", i+1)
	}
	minute := func() time.Time {
		var m time.Time
		if err := conn.QueryRow(ctx, `SELECT max(heartbeat_minute) FROM delegations`).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	// A warm-up: rows inserted together fill their pages, so the first
	// rounds move rows to pages with room for their next versions (the
	// steady state of a ledger whose rows are heartbeated all day).
	for range 10 {
		if _, err := l.HeartbeatMany(ctx, all); err != nil {
			t.Fatal(err)
		}
	}
	upd0, hot0 := stats()
	const rounds = 10
	crossed := 0
	for range rounds {
		before := minute()
		if _, err := l.HeartbeatMany(ctx, all); err != nil {
			t.Fatal(err)
		}
		if !minute().Equal(before) {
			crossed++
		}
	}
	upd1, hot1 := stats()
	upd, hot := upd1-upd0, hot1-hot0
	// The bar: at least 95% HOT within the minute.
	if want := int64(rounds-crossed) * 100 * 95 / 100; upd != rounds*100 || hot < want {
		t.Fatalf("pg_stat_user_tables: %d updates, %d HOT (%d rounds crossed a minute); want %d updates, at least %d HOT",
			upd, hot, crossed, rounds*100, want)
	}
	t.Logf("%d heartbeats, %d HOT (%.1f%%), %d rounds crossed a minute", upd, hot, 100*float64(hot)/float64(upd), crossed)

	// The control: index a column heartbeats change, and no heartbeat is
	// HOT any more. (What the retention index must never be.)
	if _, err := conn.Exec(ctx, `CREATE INDEX ON delegations (updated_at)`); err != nil {
		t.Fatal(err)
	}
	upd0, hot0 = stats()
	if _, err := l.HeartbeatMany(ctx, all); err != nil {
		t.Fatal(err)
	}
	if upd1, hot1 = stats(); upd1-upd0 != 100 || hot1-hot0 != 0 {
		t.Fatalf("with updated_at indexed: %d updates, %d HOT; want 100 and 0", upd1-upd0, hot1-hot0)
	}
}

// The pruner's statements read the finished index, never the whole table,
// on a ledger where most rows are terminal history.
func TestPlansUseTheFinishedIndex(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'd' || g, 'c', 'w', 'in_progress', now() FROM generate_series(1, 20000) g`)
	exec(t, db.Pool, `UPDATE delegations SET status = CASE WHEN right(delegation_id, 1) IN ('1', '2') THEN 'failed' ELSE 'completed' END
		WHERE right(delegation_id, 1) <> '0'`)
	exec(t, db.Pool, `ANALYZE delegations`)
	for name, sql := range map[string]string{
		"claim":   `SELECT delegation_id FROM delegations WHERE status = 'completed' AND finished_at < now() - make_interval(secs => 2592000::float8) ORDER BY finished_at LIMIT 1000 FOR UPDATE SKIP LOCKED`,
		"overdue": `SELECT min(finished_at) FROM delegations WHERE status = 'failed' AND finished_at < now() - make_interval(secs => 7776000::float8)`,
	} {
		rows, err := db.Pool.Query(ctx, "EXPLAIN "+sql)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Seq Scan") || !strings.Contains(text, "idx_delegations_finished") {
			t.Errorf("%s plan does not use idx_delegations_finished:\n%s", name, text)
		}
	}
}

func TestStartPrunesAndStops(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seedPolicyLedger(t, db.Pool)
	runs := make(chan retention.Result, 1)
	p := newPruner(t, db.Pool, retention.Config{
		Schedule: "@every 1h",
		OnRun: func(res retention.Result, err error) {
			if err != nil {
				t.Errorf("scheduled run: %v", err)
			}
			runs <- res
		},
	})
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	res := <-runs // the first run starts at once
	p.Stop()
	p.Stop()
	if res.Pruned != 4 {
		t.Errorf("first scheduled run pruned %d, want 4", res.Pruned)
	}
}
