package migrations_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// hotPathVersion is the migration of issue 19: one BEFORE ROW function and a
// statement-level audit.
const hotPathVersion = 6

// lifecycleSQL moves the rows 'm-1' to 'm-200' through the lifecycle with
// one statement per step, as a batch writer would: every step is a status
// change of many rows at once, and some rows end in each terminal status.
var lifecycleSQL = []string{
	`INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status)
	 SELECT 'm-' || g, 'caller' || (g % 3), 'callee' || (g % 2), 'task ' || g, 'queued'
	 FROM generate_series(1, 200) AS g`,
	`UPDATE delegations SET status = 'dispatched' WHERE substr(delegation_id, 3)::int % 2 = 0`,
	`UPDATE delegations SET status = 'in_progress'`,
	`UPDATE delegations SET last_heartbeat = now() - interval '1 hour'`,
	`UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
	 WHERE substr(delegation_id, 3)::int % 10 < 3`,
	`UPDATE delegations SET status = 'completed' WHERE substr(delegation_id, 3)::int % 10 BETWEEN 3 AND 6`,
}

// eventsDigestSQL renders the events of the rows 'm-*' without the columns
// that differ from run to run (ids, transaction ids, times).
const eventsDigestSQL = `
SELECT COALESCE(string_agg(concat_ws('|', delegation_id, from_status, to_status, reason, actor, caller_id, callee_id),
                           ',' ORDER BY delegation_id, id), '')
FROM delegation_events WHERE delegation_id LIKE 'm-%'`

// The hot path migration on a ledger populated by the version before it: up
// keeps every row and event; the same status changes made after up write
// the same events as before it (one per change, same from/to, actor, reason,
// caller, callee), the guards refuse what they refused, a statement that
// changes no status appends no event; down restores the per-row triggers
// with the data intact, they write the same events again, and up runs again.
func TestHotPathMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, hotPathVersion)
	ctx := context.Background()

	lifecycle := func() {
		t.Helper()
		mustExec(t, db.Pool, `DELETE FROM delegations WHERE delegation_id LIKE 'm-%' AND status IN ('completed', 'failed', 'stuck')`)
		// The live rows left by an earlier run are moved to failed first,
		// so every run starts from an empty set of 'm-*' rows.
		mustExec(t, db.Pool, `UPDATE delegations SET status = 'failed' WHERE delegation_id LIKE 'm-%'`)
		mustExec(t, db.Pool, `DELETE FROM delegations WHERE delegation_id LIKE 'm-%'`)
		for _, sql := range lifecycleSQL {
			mustExec(t, db.Pool, sql)
		}
	}
	lifecycle()
	wantEvents := mustOne[string](t, db.Pool, eventsDigestSQL)
	if n := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE delegation_id LIKE 'm-%'`); n != 200+100+200+60+80 {
		t.Fatalf("version %d wrote %d events, want 640", previous, n)
	}
	beforeRows, beforeEvents := rowsText(t, db.Pool)

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != hotPathVersion || dirty {
		t.Fatalf("after up: version %d dirty %v, %v", v, dirty, err)
	}
	if r, e := rowsText(t, db.Pool); !slices.Equal(r, beforeRows) || !slices.Equal(e, beforeEvents) {
		t.Fatal("up changed the rows or the events")
	}
	triggers := func() []string {
		rows, err := db.Pool.Query(ctx, `SELECT tgname FROM pg_trigger WHERE tgrelid = 'delegations'::regclass AND NOT tgisinternal ORDER BY tgname`)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		return names
	}
	v6Triggers := []string{"delegations_after_insert", "delegations_after_update", "delegations_before_insert",
		"delegations_before_update", "delegations_delete_events", "delegations_delete_guard", "delegations_no_truncate"}
	if got := triggers(); !slices.Equal(got, v6Triggers) {
		t.Fatalf("triggers after up: %v, want %v", got, v6Triggers)
	}

	checkGuards := func() {
		t.Helper()
		for _, c := range []struct{ sql, constraint string }{
			{`UPDATE delegations SET task_preview = 'x' WHERE delegation_id = 'm-10'`, "delegations_terminal_frozen"},
			{`UPDATE delegations SET status = 'queued' WHERE delegation_id = 'm-9'`, "delegations_forward_only"},
		} {
			_, err := db.Pool.Exec(ctx, c.sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.ConstraintName != c.constraint {
				t.Errorf("%s: %v, want a violation of %s", c.sql, err, c.constraint)
			}
		}
	}
	sameEvents := func(when string) {
		t.Helper()
		lifecycle()
		if got := mustOne[string](t, db.Pool, eventsDigestSQL); got != wantEvents {
			t.Fatalf("%s: the lifecycle wrote other events than version %d", when, previous)
		}
		checkGuards()
		// A heartbeat of every live row changes no status: no event.
		n0 := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegation_events`)
		mustExec(t, db.Pool, `UPDATE delegations SET last_heartbeat = now() WHERE status = 'in_progress'`)
		if n := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegation_events`); n != n0 {
			t.Fatalf("%s: a heartbeat appended %d events", when, n-n0)
		}
	}
	sameEvents("after up")

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != previous || dirty {
		t.Fatalf("after down: version %d dirty %v, %v", v, dirty, err)
	}
	if got := triggers(); slices.Contains(got, "delegations_before_update") || !slices.Contains(got, "delegations_audit_update") {
		t.Fatalf("triggers after down: %v", got)
	}
	sameEvents("after down")
	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	sameEvents("after up again")
}
