package migrations_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/migrations"
)

// triggerConditionsVersion is the migration whose row triggers' conditions
// call no SQL function (issue 19).
const triggerConditionsVersion = 12

// rowTriggersSQL lists the conditions of the row triggers on delegations.
const rowTriggersSQL = `
SELECT tgname, pg_get_triggerdef(oid, true) FROM pg_trigger
WHERE tgrelid = 'delegations'::regclass AND NOT tgisinternal AND tgqual IS NOT NULL
ORDER BY tgname`

// triggerDecisions makes, each in a rolled-back transaction, the writes
// whose outcome the row triggers' conditions decide, and describes what
// happened: refused (with the constraint named) or the columns the
// bookkeeping function keeps. Two versions decide alike when the
// descriptions are equal.
func triggerDecisions(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	ctx := context.Background()
	writes := []struct{ name, sql, read string }{
		{"backward move", `UPDATE delegations SET status = 'queued' WHERE delegation_id = 'tc-run'`, ""},
		{"terminal frozen", `UPDATE delegations SET result_preview = 'x' WHERE delegation_id = 'tc-done'`, ""},
		{"delete live", `DELETE FROM delegations WHERE delegation_id = 'tc-run'`, ""},
		{"delete terminal", `DELETE FROM delegations WHERE delegation_id = 'tc-done'`,
			`SELECT count(*)::text FROM delegations WHERE delegation_id = 'tc-done'`},
		{"raw completion", `UPDATE delegations SET status = 'completed' WHERE delegation_id = 'tc-run'`,
			`SELECT concat_ws(' ', status, updated_at = now(), finished_at = now()) FROM delegations WHERE delegation_id = 'tc-run'`},
		{"completion with updated_at", `UPDATE delegations SET status = 'completed', updated_at = now() WHERE delegation_id = 'tc-run'`,
			`SELECT concat_ws(' ', status, finished_at = now()) FROM delegations WHERE delegation_id = 'tc-run'`},
		{"start", `UPDATE delegations SET status = 'in_progress' WHERE delegation_id = 'tc-queued'`,
			`SELECT concat_ws(' ', last_heartbeat = now(), progress_at = now(), heartbeat_expires_at IS NOT DISTINCT FROM sweeper_heartbeat_expiry(now(), heartbeat_timeout))
			 FROM delegations WHERE delegation_id = 'tc-queued'`},
		{"dispatch", `UPDATE delegations SET status = 'dispatched' WHERE delegation_id = 'tc-queued'`,
			`SELECT (dispatched_at = now())::text FROM delegations WHERE delegation_id = 'tc-queued'`},
		{"beat on own timeout", `UPDATE delegations SET last_heartbeat = now(), updated_at = now() WHERE delegation_id = 'tc-own'`,
			`SELECT (heartbeat_expires_at = sweeper_heartbeat_expiry(now(), heartbeat_timeout))::text FROM delegations WHERE delegation_id = 'tc-own'`},
		{"forged expiry", `UPDATE delegations SET heartbeat_expires_at = now() + interval '1 year', updated_at = now() WHERE delegation_id = 'tc-own'`,
			`SELECT (heartbeat_expires_at = sweeper_heartbeat_expiry(last_heartbeat, heartbeat_timeout))::text FROM delegations WHERE delegation_id = 'tc-own'`},
		{"raw progress", `UPDATE delegations SET progress = '{"n": 2}', updated_at = now() WHERE delegation_id = 'tc-run'`,
			`SELECT (progress_at = now())::text FROM delegations WHERE delegation_id = 'tc-run'`},
		{"insert in_progress", `INSERT INTO delegations (delegation_id, caller_id, callee_id, status) VALUES ('tc-new', 'c', 'w', 'in_progress')`,
			`SELECT concat_ws(' ', last_heartbeat = now(), progress_at = now()) FROM delegations WHERE delegation_id = 'tc-new'`},
		{"insert terminal", `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, updated_at) VALUES ('tc-new', 'c', 'w', 'failed', now() - interval '1 day')`,
			`SELECT (updated_at = now())::text FROM delegations WHERE delegation_id = 'tc-new'`},
	}
	var out []string
	for _, w := range writes {
		got := func() string {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, w.sql); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					return "refused " + pe.Code + " " + pe.ConstraintName
				}
				t.Fatalf("%s: %v", w.name, err)
			}
			if w.read == "" {
				return "done"
			}
			var s string
			if err := tx.QueryRow(ctx, w.read).Scan(&s); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				t.Fatalf("%s: %v", w.name, err)
			}
			return s
		}()
		out = append(out, w.name+": "+got)
	}
	return out
}

// The trigger conditions migration, from version 11 on a populated ledger:
// up keeps rows, events and every object, and the three row triggers'
// conditions then name no SQL function (each statement would otherwise
// parse those functions' bodies again); every write those conditions
// decide is decided as before (refused, or the bookkeeping done), at 11,
// at 12 and after down.
func TestTriggerConditionsMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, triggerConditionsVersion)
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, heartbeat_timeout)
		SELECT 'h-' || g, 'caller-' || (g % 3), 'callee-' || (g % 4), 'task ' || g, 'in_progress', now(),
		       CASE WHEN g % 2 = 0 THEN interval '90 seconds' END
		FROM generate_series(1, 30) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'completed' WHERE substr(delegation_id, 3)::int % 3 = 0`)
	mustExec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, heartbeat_timeout, progress)
		VALUES ('tc-run', 'c', 'w', 'in_progress', now() - interval '5 seconds', NULL, '{"n": 1}'),
		       ('tc-own', 'c', 'w', 'in_progress', now() - interval '5 minutes', interval '10 minutes', NULL),
		       ('tc-done', 'c', 'w', 'in_progress', now(), NULL, NULL),
		       ('tc-queued', 'c', 'w', 'queued', NULL, interval '2 minutes', NULL)`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 'tc-done'`)

	before, beforeEvents := rowsText(t, db.Pool)
	beforeObjects := objects(t, db.Pool)
	beforeDecisions := triggerDecisions(t, db.Pool)
	for _, want := range []string{"backward move: refused 23514 delegations_forward_only", "terminal frozen: refused 23514 delegations_terminal_frozen",
		"delete live: refused", "delete terminal: 0", "forged expiry: true", "raw completion: completed t t"} {
		if !slices.ContainsFunc(beforeDecisions, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Fatalf("at version %d no decision %q in %q", previous, want, beforeDecisions)
		}
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != triggerConditionsVersion || dirty {
		t.Fatalf("version after up = %d dirty %v", v, dirty)
	}
	if after, afterEvents := rowsText(t, db.Pool); !slices.Equal(before, after) || !slices.Equal(beforeEvents, afterEvents) {
		t.Fatal("up changed rows or events")
	}
	if got := objects(t, db.Pool); !slices.Equal(got, beforeObjects) {
		t.Fatalf("up changed the schema's objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	// The conditions call nothing but built-in functions: the part of each
	// definition before EXECUTE FUNCTION names no sweeper_ function.
	calls := regexp.MustCompile(`sweeper_\w+\(`)
	rows, err := db.Pool.Query(context.Background(), rowTriggersSQL)
	if err != nil {
		t.Fatal(err)
	}
	defs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var name, def string
		err := r.Scan(&name, &def)
		return name + ": " + def, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) != 3 {
		t.Fatalf("row triggers with a condition: %q, want the update, insert and delete guards", defs)
	}
	for _, def := range defs {
		cond, _, _ := strings.Cut(def, "EXECUTE FUNCTION")
		if m := calls.FindString(cond); m != "" {
			t.Errorf("at version %d the condition of %s calls %s", triggerConditionsVersion, def, m)
		}
	}
	if got := triggerDecisions(t, db.Pool); !slices.Equal(got, beforeDecisions) {
		t.Fatalf("at version %d the triggers decide otherwise:\n%s\nat %d:\n%s", triggerConditionsVersion,
			strings.Join(got, "\n"), previous, strings.Join(beforeDecisions, "\n"))
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if got := objects(t, db.Pool); !slices.Equal(got, beforeObjects) {
		t.Fatalf("down did not restore the objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	if got := triggerDecisions(t, db.Pool); !slices.Equal(got, beforeDecisions) {
		t.Fatalf("after down the triggers decide otherwise:\n%s", strings.Join(got, "\n"))
	}
	if after, afterEvents := rowsText(t, db.Pool); !slices.Equal(before, after) || !slices.Equal(beforeEvents, afterEvents) {
		t.Fatal("down changed rows or events")
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
