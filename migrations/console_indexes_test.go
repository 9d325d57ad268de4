package migrations_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/migrations"
)

// consoleIndexesVersion is the migration of issue 11's "fast at size".
const consoleIndexesVersion = 5

// The console indexes migration on a ledger populated by the version before
// it: up indexes the stuck events already there (and only those) and keeps
// every row and event; the overview's stuck count is then an index-only
// scan; down drops the index with the data intact, and up runs again.
func TestConsoleIndexesMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, consoleIndexesVersion)
	ctx := context.Background()

	// Rows moved through the statuses by status changes (so with events):
	// 3 of 10 end stuck, the others completed or in progress.
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status)
		SELECT 'm-' || g, 'caller' || (g % 3), 'callee' || (g % 2), 'task ' || g, 'queued'
		FROM generate_series(1, 200) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'in_progress'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
		WHERE substr(delegation_id, 3)::int % 10 < 3`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'completed'
		WHERE substr(delegation_id, 3)::int % 10 BETWEEN 3 AND 6`)
	stuckEvents := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`)
	if stuckEvents != 60 {
		t.Fatalf("seeded %d stuck events, want 60", stuckEvents)
	}
	beforeRows, beforeEvents := rowsText(t, db.Pool)

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != consoleIndexesVersion || dirty {
		t.Fatalf("after up: version %d dirty %v, %v", v, dirty, err)
	}
	if r, e := rowsText(t, db.Pool); !slices.Equal(r, beforeRows) || !slices.Equal(e, beforeEvents) {
		t.Fatal("up changed the rows or the events")
	}
	if n := mustOne[int64](t, db.Pool, `
		SELECT pg_relation_size('idx_delegation_events_stuck') / current_setting('block_size')::bigint`); n < 1 {
		t.Fatalf("idx_delegation_events_stuck has %d pages", n)
	}
	// The index holds the stuck events and no other: read through it alone
	// (every other plan off), the count is the stuck events'.
	mustExec(t, db.Pool, `VACUUM ANALYZE delegation_events`)
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off`); err != nil {
		t.Fatal(err)
	}
	const count = `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck' AND tx_id >= '0'::xid8 AND caller_id = 'caller1'`
	rows, err := tx.Query(ctx, `EXPLAIN (COSTS OFF) `+count)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "Index Only Scan using idx_delegation_events_stuck")
	}) {
		t.Fatalf("the stuck count does not read idx_delegation_events_stuck alone:\n%v", lines)
	}
	var viaIndex int64
	if err := tx.QueryRow(ctx, count).Scan(&viaIndex); err != nil {
		t.Fatal(err)
	}
	want := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegation_events e JOIN delegations d USING (delegation_id)
		WHERE e.to_status = 'stuck' AND d.caller_id = 'caller1'`)
	if viaIndex != want || want == 0 {
		t.Fatalf("index-only count %d, want %d (nonzero)", viaIndex, want)
	}
	_ = tx.Rollback(ctx)

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != previous || dirty {
		t.Fatalf("after down: version %d dirty %v, %v", v, dirty, err)
	}
	if n := mustOne[int64](t, db.Pool, `SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_delegation_events_stuck'`); n != 0 {
		t.Fatal("down left idx_delegation_events_stuck")
	}
	if r, e := rowsText(t, db.Pool); !slices.Equal(r, beforeRows) || !slices.Equal(e, beforeEvents) {
		t.Fatal("down changed the rows or the events")
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("up again: version %d, want %d", v, migrations.Latest)
	}
}
