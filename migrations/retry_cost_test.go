package migrations_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/migrations"
)

// retryCostVersion is the migration of issue 21, item 6 (the retry's cost).
const retryCostVersion = 10

// retryScenarioSQL is one transaction's worth of moves that exercise every
// branch of the retry policy, by raw SQL: a plain next attempt, a chain's
// third, a derived id that another delegation already has, an id too long
// to derive from, a next attempt raw SQL inserted while the row was live,
// the last attempt (exhausted), a row without a policy, a policy on failed
// (retried when failed, not when stuck), and a row with an idempotency key
// and progress (both copied). Heartbeats and times are relative to now(),
// so that two runs in two transactions write the same rows and events
// relative to their own now().
var retryScenarioSQL = []string{
	`INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat,
	                          attempt, retry_of, max_attempts, retry_on, idempotency_key, progress,
	                          retry_backoff, retry_backoff_max)
	 VALUES ('rc-a', 'c1', 'w1', 'a', 'in_progress', now() - interval '2 hours', 1, NULL, 3, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-g#2', 'c1', 'w1', 'g', 'in_progress', now() - interval '2 hours', 2, 'rc-g', 4, '{stuck}', NULL, NULL, '10 s', '15 s'),
	        ('rc-b', 'c2', 'w2', 'b', 'in_progress', now() - interval '2 hours', 1, NULL, 2, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-b#2', 'c9', 'w9', 'someone else', 'queued', NULL, 1, NULL, 1, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        (repeat('L', 254), 'c2', 'w2', 'long', 'in_progress', now() - interval '2 hours', 1, NULL, 2, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-c', 'c3', 'w3', 'c', 'in_progress', now() - interval '2 hours', 1, NULL, 3, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-d', 'c3', 'w3', 'd', 'in_progress', now() - interval '2 hours', 3, 'rc-d-prev', 3, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-e', 'c4', 'w4', 'e', 'in_progress', now() - interval '2 hours', 1, NULL, 1, '{stuck}', NULL, NULL, '30 s', '1 h'),
	        ('rc-f', 'c4', 'w4', 'f', 'in_progress', now() - interval '2 hours', 1, NULL, 2, '{failed}', NULL, NULL, '30 s', '1 h'),
	        ('rc-f2', 'c4', 'w4', 'f2', 'in_progress', now() - interval '2 hours', 1, NULL, 2, '{failed}', NULL, NULL, '30 s', '1 h'),
	        ('rc-h', 'c5', 'w5', 'h', 'in_progress', now() - interval '2 hours', 1, NULL, 5, '{stuck,failed}', 'key-h', '{"step": 3}', '1 s', '1 h')`,
	// Raw SQL gives rc-c its next attempt while rc-c is live.
	`INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, attempt, retry_of, not_before, max_attempts)
	 VALUES ('rc-c-next', 'c3', 'w3', 'c', 2, 'rc-c', now() + interval '5 minutes', 3)`,
	`SELECT set_config('sweeper.actor', 'scenario', true), set_config('sweeper.detail', '{"why": "test"}', true)`,
	`UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
	 WHERE delegation_id IN ('rc-a', 'rc-g#2', 'rc-b', repeat('L', 254), 'rc-c', 'rc-d', 'rc-e', 'rc-f2', 'rc-h')`,
	`UPDATE delegations SET status = 'failed', error_detail = 'boom' WHERE delegation_id = 'rc-f'`,
}

// retryScenario runs retryScenarioSQL in a transaction it rolls back and
// returns what it wrote: its events in order and its rows, times relative
// to the transaction's now().
func retryScenario(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, st := range retryScenarioSQL {
		if _, err := tx.Exec(ctx, st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
	var events, rows string
	if err := tx.QueryRow(ctx, `
		SELECT string_agg(concat_ws('|', e.delegation_id, e.from_status, e.to_status, e.reason, e.actor,
		                            (e.detail - 'not_before')::text, (e.detail->>'not_before')::timestamptz - now()),
		                  E'\n' ORDER BY e.id)
		FROM delegation_events AS e WHERE e.tx_id = pg_current_xact_id()`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `
		SELECT string_agg(concat_ws('|', d.delegation_id, d.caller_id, d.callee_id, d.task_preview, d.status,
		                            d.idempotency_key, d.deadline - now(), d.heartbeat_timeout, d.progress_timeout,
		                            d.queue_timeout, d.start_timeout, d.progress::text, d.attempt, d.retry_of,
		                            d.not_before - now(), d.max_attempts, d.retry_backoff, d.retry_backoff_max,
		                            d.retry_on::text, d.error_detail),
		                  E'\n' ORDER BY d.delegation_id)
		FROM delegations AS d WHERE d.created_at = now()`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return events + "\n--\n" + rows
}

// functionsDigest is every sweeper function's name, arguments, body and
// settings: what down must restore exactly.
const functionsDigest = `
SELECT md5(string_agg(concat_ws('|', p.proname, pg_get_function_identity_arguments(p.oid), p.prosrc,
                                 p.provolatile, p.prosecdef, p.proconfig::text), ',' ORDER BY p.proname, p.oid))
FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace`

// The retry cost migration, from version 9 on a populated ledger: up keeps
// every row and event, and the policy writes the same next attempts and
// events as before (the scenario's transaction, compared byte for byte,
// times relative to now()); down restores version 9's functions exactly,
// with the same behaviour again; up again.
func TestRetryCostMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, retryCostVersion)

	// A populated ledger of version 9: rows in every status, some of them
	// retried by the policy (chains of two and three attempts, one
	// exhausted), with their events.
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat,
		                         max_attempts, idempotency_key)
		SELECT 'p-' || g, 'caller-' || (g % 3), 'callee-' || (g % 4), 'task ' || g, 'in_progress', now(),
		       CASE WHEN g % 2 = 0 THEN 3 ELSE 1 END, CASE WHEN g % 5 = 0 THEN 'k-' || g END
		FROM generate_series(1, 40) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
		WHERE delegation_id LIKE 'p-%' AND substr(delegation_id, 3)::int % 4 < 2`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'deadline_exceeded'
		WHERE retry_of IS NOT NULL AND substr(delegation_id, 3, 1) = '2'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'completed' WHERE delegation_id LIKE 'p-%' AND status = 'in_progress'
		AND substr(delegation_id, 3)::int % 4 = 2`)
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE retry_of IS NOT NULL`); got < 10 {
		t.Fatalf("the populated ledger has %d later attempts, want some", got)
	}
	before, beforeEvents := rowsText(t, db.Pool)
	beforeObjects := objects(t, db.Pool)
	beforeFunctions := mustOne[string](t, db.Pool, functionsDigest)
	atPrevious := retryScenario(t, db.Pool)
	for _, want := range []string{
		"rc-a#2", "rc-g#3", "retry-2-", "rc-c-next", `"exhausted": true`, "rc-f#2", "rc-h#2|c5|w5|h|queued|key-h",
		`{"step": 3}`, "retry_policy",
	} {
		if !strings.Contains(atPrevious, want) {
			t.Fatalf("the scenario at version %d lacks %q (it does not test what it says):\n%s", previous, want, atPrevious)
		}
	}
	if strings.Contains(atPrevious, "rc-f2#2") || strings.Contains(atPrevious, "rc-e#2") || strings.Contains(atPrevious, "rc-c#2") {
		t.Fatalf("the scenario retried a row its policy does not retry:\n%s", atPrevious)
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != retryCostVersion || dirty {
		t.Fatalf("version after up = %d dirty %v", v, dirty)
	}
	if after, afterEvents := rowsText(t, db.Pool); !slices.Equal(before, after) || !slices.Equal(beforeEvents, afterEvents) {
		t.Fatal("up changed rows or events")
	}
	if got := retryScenario(t, db.Pool); got != atPrevious {
		t.Fatalf("the policy writes differently at version %d:\n%s\nat version %d:\n%s", retryCostVersion, got, previous, atPrevious)
	}
	// The next attempt's name is inlined now: a plan shows no call.
	var plan string
	if err := db.Pool.QueryRow(context.Background(),
		`EXPLAIN (VERBOSE, COSTS OFF) SELECT sweeper_next_attempt_id(delegation_id, attempt) FROM delegations`).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plan, "sweeper_next_attempt_id") {
		t.Fatalf("sweeper_next_attempt_id is not inlined: %s", plan)
	}
	// Whatever a caller passes sweeper_insert_retries, it inserts only
	// what the policy would: not for a row the policy does not retry, not
	// under a name that is not the policy's.
	mustExec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, max_attempts)
		VALUES ('x-live', 'c', 'w', 'in_progress', now(), 3), ('x-stuck', 'c', 'w', 'in_progress', now(), 3)`)
	// Without the audit (triggers off): x-stuck is stuck with no next attempt.
	mustExec(t, db.Pool, `SET LOCAL session_replication_role = replica;
		UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = 'x-stuck'`)
	mustExec(t, db.Pool, `SELECT sweeper_insert_retries(ARRAY['x-live', 'x-stuck', 'x-stuck'], ARRAY['x-live#2', 'chosen', 'retry-2-' || md5('x-stuck')])`)
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE retry_of IN ('x-live', 'x-stuck')`); got != 0 {
		t.Fatalf("sweeper_insert_retries inserted %d rows the policy would not", got)
	}
	mustExec(t, db.Pool, `SELECT sweeper_insert_retries(ARRAY['x-stuck'], ARRAY['x-stuck#2'])`)
	if got := mustOne[string](t, db.Pool, `SELECT delegation_id FROM delegations WHERE retry_of = 'x-stuck'`); got != "x-stuck#2" {
		t.Fatalf("the policy's next attempt of x-stuck is %q", got)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != previous || dirty {
		t.Fatalf("version after down = %d dirty %v, want %d", v, dirty, previous)
	}
	if got := objects(t, db.Pool); !slices.Equal(got, beforeObjects) {
		t.Fatalf("down did not restore the objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	if got := mustOne[string](t, db.Pool, functionsDigest); got != beforeFunctions {
		t.Fatal("down did not restore version 9's functions")
	}
	if got := retryScenario(t, db.Pool); got != atPrevious {
		t.Fatalf("the policy writes differently after down:\n%s\nbefore:\n%s", got, atPrevious)
	}

	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
