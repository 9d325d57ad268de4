package migrations_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
)

// progressBeatsVersion is the migration after which a heartbeat that
// changes its progress calls no row function (issue 20).
const progressBeatsVersion = 11

// progressMove makes, in one rolled-back transaction, a ledger heartbeat
// with a changed progress on row a and a raw UPDATE of row b's progress,
// and returns how many times each called the bookkeeping function
// (pg_stat_xact_user_functions, track_functions = pl) and whether each
// moved its row's progress_at to now(), with its minute and expiry as the
// function keeps them.
func progressMove(t *testing.T, db interface {
	Begin(context.Context) (pgx.Tx, error)
}) (beatCalls, rawCalls int64, beatMoved, rawMoved bool) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	calls := func() int64 {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(sum(calls), 0) FROM pg_stat_xact_user_functions
			WHERE funcname = 'sweeper_delegations_before'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	moved := func(id string) bool {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT progress_at = now()
			AND progress_minute = date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00')
			AND progress_expires_at IS NOT DISTINCT FROM sweeper_heartbeat_expiry(now(), progress_timeout)
			FROM delegations WHERE delegation_id = $1`, id).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if _, err := tx.Exec(ctx, `SET LOCAL track_functions = 'pl'`); err != nil {
		t.Fatal(err)
	}
	c0 := calls()
	notLive, err := ledger.New(tx).HeartbeatBeats(ctx, []ledger.Beat{{ID: "pb-a", Progress: json.RawMessage(`{"step": 2}`)}})
	if err != nil || len(notLive) != 0 {
		t.Fatalf("heartbeat: %v %v", notLive, err)
	}
	c1 := calls()
	if _, err := tx.Exec(ctx, `UPDATE delegations SET progress = '{"step": 2}' WHERE delegation_id = 'pb-b'`); err != nil {
		t.Fatal(err)
	}
	c2 := calls()
	return c1 - c0, c2 - c1, moved("pb-a"), moved("pb-b")
}

// The progress beats migration, from version 10 on a populated ledger: up
// keeps rows, events and every object but the update trigger; after it a
// heartbeat with a changed progress calls no row function and still moves
// progress_at (its minute and expiry) as the function would, while a raw
// UPDATE of progress still calls it and gets the same; down restores
// version 10's trigger (the heartbeat calls the function again), up again.
func TestProgressBeatsMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, progressBeatsVersion)
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, progress, progress_timeout)
		SELECT 'p-' || g, 'caller-' || (g % 3), 'callee-' || (g % 4), 'task ' || g, 'in_progress', now(),
		       CASE WHEN g % 2 = 0 THEN '{"k": 1}'::jsonb END, CASE WHEN g % 3 = 0 THEN interval '5 minutes' END
		FROM generate_series(1, 40) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'stalled' WHERE substr(delegation_id, 3)::int % 4 = 0`)
	mustExec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, progress, progress_timeout)
		VALUES ('pb-a', 'c', 'w', 'in_progress', now(), '{"step": 1}', interval '2 minutes'),
		       ('pb-b', 'c', 'w', 'in_progress', now(), '{"step": 1}', interval '2 minutes')`)
	// The rows' progress is a second older than the transactions below.
	mustExec(t, db.Pool, `SET LOCAL session_replication_role = replica;
		UPDATE delegations SET progress_at = progress_at - interval '1 second' WHERE delegation_id IN ('pb-a', 'pb-b')`)
	// A deployment's daemon role, granted the columns of version 10's
	// heartbeat (deploy/postgres/grants.sql): up grants it the columns the
	// heartbeat writes now, down takes them back.
	role := fmt.Sprintf("sweeper_daemon_pb_%d", time.Now().UnixNano())
	mustExec(t, db.Pool, `CREATE ROLE `+role)
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), `REVOKE ALL ON delegations FROM `+role)
		_, _ = db.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+role)
	})
	mustExec(t, db.Pool, `GRANT UPDATE (last_heartbeat, progress) ON delegations TO `+role)
	mayUpdate := func() bool {
		return mustOne[bool](t, db.Pool, `SELECT has_column_privilege($1, 'delegations', 'progress_at', 'UPDATE')
			AND has_column_privilege($1, 'delegations', 'progress_minute', 'UPDATE')
			AND has_column_privilege($1, 'delegations', 'progress_expires_at', 'UPDATE')`, role)
	}
	if mayUpdate() {
		t.Fatal("the role may update progress_at before the migration")
	}
	before, beforeEvents := rowsText(t, db.Pool)
	beforeObjects := objects(t, db.Pool)

	beat, raw, beatMoved, rawMoved := progressMove(t, db.Pool)
	if beat != 1 || raw != 1 || !beatMoved || !rawMoved {
		t.Fatalf("at version %d: function calls heartbeat %d raw %d, moved %v %v; want 1, 1, true, true", previous, beat, raw, beatMoved, rawMoved)
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != progressBeatsVersion || dirty {
		t.Fatalf("version after up = %d dirty %v", v, dirty)
	}
	if after, afterEvents := rowsText(t, db.Pool); !slices.Equal(before, after) || !slices.Equal(beforeEvents, afterEvents) {
		t.Fatal("up changed rows or events")
	}
	if got := objects(t, db.Pool); len(got) != len(beforeObjects) {
		t.Fatalf("up changed the schema's objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	if !mayUpdate() {
		t.Fatal("up did not grant the heartbeat's columns to the role that may update progress")
	}
	beat, raw, beatMoved, rawMoved = progressMove(t, db.Pool)
	if beat != 0 || raw != 1 || !beatMoved || !rawMoved {
		t.Fatalf("at version %d: function calls heartbeat %d raw %d, moved %v %v; want 0, 1, true, true", progressBeatsVersion, beat, raw, beatMoved, rawMoved)
	}
	// A writer that sets progress_at to anything but now() gets now().
	mustExec(t, db.Pool, `UPDATE delegations SET progress = '{"step": 9}', progress_at = now() - interval '1 day'
		WHERE delegation_id = 'pb-a'`)
	if got := mustOne[time.Time](t, db.Pool, `SELECT progress_at FROM delegations WHERE delegation_id = 'pb-a'`); time.Since(got) > time.Minute {
		t.Fatalf("a writer set progress_at to %s", got)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if mayUpdate() {
		t.Fatal("down left the role the heartbeat's columns")
	}
	if got := objects(t, db.Pool); !slices.Equal(got, beforeObjects) {
		t.Fatalf("down did not restore the objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	beat, raw, beatMoved, rawMoved = progressMove(t, db.Pool)
	if beat != 1 || raw != 1 || !beatMoved || !rawMoved {
		t.Fatalf("after down: function calls heartbeat %d raw %d, moved %v %v; want 1, 1, true, true", beat, raw, beatMoved, rawMoved)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
