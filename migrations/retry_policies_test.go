package migrations_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
)

// retryPoliciesVersion is the migration of issue 21.
const retryPoliciesVersion = 8

// The retry policy migration, from the version before it on a populated
// ledger: up keeps every row and event and gives each the default policy
// (one attempt: nothing retries, nothing is exhausted, so the ledger behaves
// as before); the policy then works for raw SQL; down, after the policy
// wrote attempt chains, restores the previous schema and keeps the rows
// (the attempts it inserted are ordinary later attempts there); up again.
func TestRetryPoliciesMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, retryPoliciesVersion)
	ctx := context.Background()

	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key)
		SELECT 'm-' || s || '-' || g, 'caller', 'callee-' || (g % 3), 'task ' || g, 'queued',
		       CASE WHEN g = 1 THEN 'key-' || s END
		FROM unnest(ARRAY['queued','dispatched','in_progress','completed','failed','stuck']) AS s,
		     generate_series(1, 20) AS g`)
	for _, st := range []string{"dispatched", "in_progress", "completed", "failed", "stuck"} {
		mustExec(t, db.Pool, `UPDATE delegations SET status = $1,
			stuck_reason = CASE WHEN $1 = 'stuck' THEN 'heartbeat_timeout' END
			WHERE delegation_id LIKE 'm-' || $1 || '-%'`, st)
	}
	rows := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations`)
	events := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegation_events`)
	digest := mustOne[string](t, db.Pool, oldColumnsDigest)
	eventsDigest := mustOne[string](t, db.Pool, `SELECT md5(string_agg(concat_ws('|', id, delegation_id, from_status, to_status, reason, actor, at, detail), ',' ORDER BY id)) FROM delegation_events`)
	before := objects(t, db.Pool)

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != retryPoliciesVersion {
		t.Fatalf("version after up = %d", v)
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE max_attempts = 1 AND retry_backoff = '30 s'
		AND retry_backoff_max = '1 h' AND retry_on = '{stuck}' AND not_before IS NULL`); got != rows {
		t.Fatalf("%d of %d rows have the default policy", got, rows)
	}
	if got := mustOne[string](t, db.Pool, oldColumnsDigest); got != digest {
		t.Fatal("up changed existing rows")
	}
	l := ledger.New(db.Pool)
	page, err := l.List(ctx, ledger.ListFilter{Exhausted: true})
	if err != nil || len(page.Delegations) != 0 {
		t.Fatalf("exhausted rows after up: %+v, %v", page, err)
	}
	// The in-flight rows of before: stuck by raw SQL with the default
	// policy, nothing retries; with a policy given by raw SQL, the next
	// attempt appears; the queued ones are claimable.
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'deadline_exceeded' WHERE delegation_id = 'm-in_progress-1'`)
	mustExec(t, db.Pool, `UPDATE delegations SET max_attempts = 2 WHERE delegation_id = 'm-in_progress-2'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 'm-in_progress-2'`)
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations`); got != rows+1 {
		t.Fatalf("%d rows after two stuck moves, want %d", got, rows+1)
	}
	next, err := l.Get(ctx, "m-in_progress-2#2")
	if err != nil || next.Status != ledger.StatusQueued || next.NotBefore == nil || next.MaxAttempts != 2 {
		t.Fatalf("next attempt: %+v, %v", next, err)
	}
	claimed, err := l.Claim(ctx, "callee-1", 100)
	if err != nil || len(claimed) != 7 { // g = 1, 4, ..., 19 of the queued rows
		t.Fatalf("claimed %d, %v", len(claimed), err)
	}
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck' WHERE delegation_id = 'm-in_progress-2#2'`)
	if page, err := l.List(ctx, ledger.ListFilter{Exhausted: true}); err != nil || len(page.Delegations) != 1 {
		t.Fatalf("exhausted rows: %+v, %v", page, err)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != previous || dirty {
		t.Fatalf("version after down = %d dirty %v, want %d", v, dirty, previous)
	}
	if after := objects(t, db.Pool); !slices.Equal(before, after) {
		t.Fatalf("down did not restore the schema:\nbefore %v\nafter  %v", before, after)
	}
	// The events of before are as they were; the rows of before changed only
	// by the moves made at version 8 (checked on the others).
	if got := mustOne[string](t, db.Pool, `SELECT md5(string_agg(concat_ws('|', id, delegation_id, from_status, to_status, reason, actor, at, detail), ',' ORDER BY id)) FROM delegation_events WHERE id <= $1`, events); got != eventsDigest {
		t.Fatal("down changed the events of before")
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE attempt = 2 AND retry_of = 'm-in_progress-2'`); got != 1 {
		t.Fatalf("the policy's attempt is gone after down (%d)", got)
	}
	// The audit trigger of the previous version, which works.
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM pg_proc WHERE proname = 'sweeper_delegations_audit'
		AND prosrc NOT LIKE '%retry%'`); got != 1 {
		t.Fatal("the previous audit function is not back")
	}
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck' WHERE delegation_id = 'm-in_progress-3'`)

	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
