package migrations_test

import (
	"context"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
)

// retentionVersion is the migration that adds finished_at and pruning.
const retentionVersion = 3

// upVersions lists the versions of the embedded up migrations, ascending.
func upVersions(t *testing.T) []uint {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	var out []uint
	for _, n := range names {
		prefix, _, _ := strings.Cut(n, "_")
		v, err := strconv.ParseUint(prefix, 10, 32)
		if err != nil {
			t.Fatalf("migration %s: %v", n, err)
		}
		out = append(out, uint(v))
	}
	slices.Sort(out)
	return out
}

// atVersionBefore returns an empty database migrated to the embedded version
// just below version, with its migrator (closed when the test ends) and
// that version.
func atVersionBefore(t *testing.T, version uint) (db *testdb.DB, mg *migrations.Migrator, previous uint) {
	t.Helper()
	versions := upVersions(t)
	steps := slices.Index(versions, version)
	if steps < 1 {
		t.Fatalf("embedded versions %v: want %d after an earlier one", versions, version)
	}
	previous = versions[steps-1]
	db = testdb.NewEmpty(t)
	mg, err := migrations.Open(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mg.Close() })
	if err := mg.Steps(steps); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != previous || dirty {
		t.Fatalf("version %d dirty %v, %v; want %d", v, dirty, err, previous)
	}
	return db, mg, previous
}

// rowsText renders every delegation (without finished_at) and every event as
// text, in a fixed order, to compare the data before and after a migration.
func rowsText(t *testing.T, pool *pgxpool.Pool) (delegations, events []string) {
	t.Helper()
	ctx := context.Background()
	collect := func(sql string) []string {
		rows, err := pool.Query(ctx, sql)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return collect(`SELECT (to_jsonb(d) - 'finished_at')::text FROM delegations d ORDER BY delegation_id`),
		collect(`SELECT to_jsonb(e)::text FROM delegation_events e ORDER BY id`)
}

// The retention migration on a database populated by the version before it:
// every row and event is kept, terminal rows get finished_at (the moment they
// became terminal, their frozen updated_at), the others none; down restores
// the previous schema with the data intact.
func TestRetentionMigrationOnPopulatedDatabase(t *testing.T) {
	t.Parallel()
	db, mg, prev := atVersionBefore(t, retentionVersion)
	ctx := context.Background()
	before := objects(t, db.Pool)

	// Rows in every status, the terminal ones through real transitions (so
	// with events), at distinct times, plus one inserted terminal.
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES
		  ('q', 'c', 'w', 'queued', NULL), ('d', 'c', 'w', 'dispatched', NULL),
		  ('ip', 'c', 'w', 'in_progress', now()), ('c1', 'c', 'w', 'in_progress', now()),
		  ('f1', 'c', 'w', 'dispatched', NULL), ('s1', 'c', 'w', 'in_progress', now() - interval '1 hour'),
		  ('c2', 'c', 'w', 'completed', NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`UPDATE delegations SET status = 'completed', result_preview = 'ok' WHERE delegation_id = 'c1'`,
		`UPDATE delegations SET status = 'failed', error_detail = 'boom' WHERE delegation_id = 'f1'`,
		`UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 's1'`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	delegations0, events0 := rowsText(t, db.Pool)
	if len(delegations0) != 7 || len(events0) != 10 {
		t.Fatalf("seeded %d delegations, %d events; want 7 and 10", len(delegations0), len(events0))
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != retentionVersion {
		t.Fatalf("version %d after one step up, want %d", v, retentionVersion)
	}
	delegations1, events1 := rowsText(t, db.Pool)
	if !slices.Equal(delegations0, delegations1) || !slices.Equal(events0, events1) {
		t.Fatalf("up changed the data:\n%v\n%v\nwant\n%v\n%v", delegations1, events1, delegations0, events0)
	}
	var wrong []string
	rows, err := db.Pool.Query(ctx, `
		SELECT delegation_id FROM delegations
		WHERE CASE WHEN status IN ('completed', 'failed', 'stuck')
		           THEN finished_at IS DISTINCT FROM updated_at
		           ELSE finished_at IS NOT NULL END`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		wrong = append(wrong, id)
	}
	rows.Close()
	if len(wrong) > 0 {
		t.Fatalf("finished_at wrong after up for %v", wrong)
	}

	// After the upgrade the database sets finished_at on the next terminal move.
	if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET status = 'completed' WHERE delegation_id = 'ip'`); err != nil {
		t.Fatal(err)
	}
	var set bool
	if err := db.Pool.QueryRow(ctx, `SELECT finished_at = updated_at FROM delegations WHERE delegation_id = 'ip'`).Scan(&set); err != nil || !set {
		t.Fatalf("finished_at after a completion: %v, %v", set, err)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != prev || dirty {
		t.Fatalf("version after down %d dirty %v, %v; want %d", v, dirty, err, prev)
	}
	if after := objects(t, db.Pool); !slices.Equal(before, after) {
		t.Fatalf("down did not restore version %d's objects:\n%v\nwant\n%v", prev, after, before)
	}
	var cols int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'delegations' AND column_name = 'finished_at'`).Scan(&cols); err != nil || cols != 0 {
		t.Fatalf("finished_at still there after down (%d), %v", cols, err)
	}
	delegations2, events2 := rowsText(t, db.Pool)
	if len(delegations2) != 7 || len(events2) != 11 {
		t.Fatalf("after down %d delegations, %d events; want 7 and 11", len(delegations2), len(events2))
	}
	// The rows other than the one completed in between are as they were.
	for i, d := range delegations0 {
		if !strings.Contains(d, `"delegation_id": "ip"`) && d != delegations2[i] {
			t.Errorf("row changed by up and down:\n%s\nwant\n%s", delegations2[i], d)
		}
	}
	if !slices.Equal(events0, events2[:10]) {
		t.Errorf("events changed by up and down")
	}
	// Version prev's guards are back: the log refuses deletes row by row.
	if _, err := db.Pool.Exec(ctx, `DELETE FROM delegation_events WHERE delegation_id = 'q'`); err == nil ||
		!strings.Contains(err.Error(), "append-only") {
		t.Fatalf("delete of an event after down: %v", err)
	}
	// And up again works on the data down left.
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
}
