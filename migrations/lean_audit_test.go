package migrations_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/migrations"
)

// leanAuditVersion is the migration that reads the audit's rows once
// (issue 19).
const leanAuditVersion = 11

// lifecycleScenarioSQL moves rows without a retry policy through every
// kind of status change the audit records, by raw SQL and with a writer's
// actor, reason and detail: an insert in several statuses, a multi-row
// UPDATE whose rows move to different statuses (one of them not at all),
// stuck with and without progress, a row whose status does not change.
var lifecycleScenarioSQL = []string{
	`INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, progress)
	 VALUES ('ls-a', 'c1', 'w1', 'a', 'queued', NULL, NULL),
	        ('ls-b', 'c1', 'w2', 'b', 'dispatched', NULL, NULL),
	        ('ls-c', 'c2', 'w1', 'c', 'in_progress', now() - interval '2 hours', '{"step": 1}'),
	        ('ls-d', 'c2', 'w2', 'd', 'in_progress', now() - interval '3 hours', NULL),
	        ('ls-e', 'c3', 'w3', 'e', 'in_progress', now(), NULL)`,
	`UPDATE delegations SET status = CASE delegation_id WHEN 'ls-a' THEN 'dispatched' WHEN 'ls-b' THEN 'in_progress'
	                                                    ELSE status END
	 WHERE delegation_id IN ('ls-a', 'ls-b', 'ls-e')`,
	`SELECT set_config('sweeper.actor', 'sweeper', true), set_config('sweeper.reason', 'heartbeat_timeout', true),
	        set_config('sweeper.detail', '{"run": 7}', true)`,
	`UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id IN ('ls-c', 'ls-d')`,
	`SELECT set_config('sweeper.actor', 'api:worker', true), set_config('sweeper.reason', '', true),
	        set_config('sweeper.detail', '', true)`,
	`UPDATE delegations SET status = 'completed', result_preview = 'ok' WHERE delegation_id = 'ls-b'`,
	`UPDATE delegations SET status = 'failed', error_detail = 'boom' WHERE delegation_id = 'ls-a'`,
}

// The lean audit migration, from version 10 on a populated ledger: up keeps
// every row and event and the schema's objects, and the audit writes the
// same events and rows as before, byte for byte (a lifecycle without retry
// policies and the retry policy's scenario); down restores version 10's
// functions exactly, with the same behaviour; up again.
func TestLeanAuditMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, leanAuditVersion)
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, last_heartbeat, max_attempts, progress)
		SELECT 'p-' || g, 'caller-' || (g % 3), 'callee-' || (g % 4), 'task ' || g, 'in_progress', now(),
		       CASE WHEN g % 2 = 0 THEN 3 ELSE 1 END, CASE WHEN g % 3 = 0 THEN '{"k": 1}'::jsonb END
		FROM generate_series(1, 40) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
		WHERE delegation_id LIKE 'p-%' AND substr(delegation_id, 3)::int % 4 < 2`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'completed' WHERE delegation_id LIKE 'p-%' AND status = 'in_progress'
		AND substr(delegation_id, 3)::int % 4 = 2`)
	before, beforeEvents := rowsText(t, db.Pool)
	beforeObjects := objects(t, db.Pool)
	beforeFunctions := mustOne[string](t, db.Pool, functionsDigest)
	lifecycle := scenario(t, db.Pool, lifecycleScenarioSQL)
	retries := retryScenario(t, db.Pool)
	for _, want := range []string{
		"ls-a|queued|db:", "ls-a|queued|dispatched|db:", "ls-b|dispatched|in_progress|db:",
		`ls-c|in_progress|stuck|heartbeat_timeout|sweeper|{"run": 7, "progress": {"step": 1}`,
		`"heartbeat_age_seconds": 10800.000}`, "ls-b|in_progress|completed|api:worker", "ls-a|dispatched|failed|api:worker",
	} {
		if !strings.Contains(lifecycle, want) {
			t.Fatalf("the lifecycle scenario at version %d lacks %q (it does not test what it says):\n%s", previous, want, lifecycle)
		}
	}
	if strings.Contains(lifecycle, "ls-e|in_progress|in_progress") {
		t.Fatalf("an UPDATE that did not change a status was audited:\n%s", lifecycle)
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != leanAuditVersion || dirty {
		t.Fatalf("version after up = %d dirty %v", v, dirty)
	}
	if after, afterEvents := rowsText(t, db.Pool); !slices.Equal(before, after) || !slices.Equal(beforeEvents, afterEvents) {
		t.Fatal("up changed rows or events")
	}
	if got := objects(t, db.Pool); !slices.Equal(got, beforeObjects) {
		t.Fatalf("up changed the schema's objects:\nbefore %v\nafter  %v", beforeObjects, got)
	}
	if got := scenario(t, db.Pool, lifecycleScenarioSQL); got != lifecycle {
		t.Fatalf("the audit writes differently at version %d:\n%s\nat version %d:\n%s", leanAuditVersion, got, previous, lifecycle)
	}
	if got := retryScenario(t, db.Pool); got != retries {
		t.Fatalf("the retry policy writes differently at version %d:\n%s\nat version %d:\n%s", leanAuditVersion, got, previous, retries)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != previous || dirty {
		t.Fatalf("version after down = %d dirty %v, want %d", v, dirty, previous)
	}
	if got := mustOne[string](t, db.Pool, functionsDigest); got != beforeFunctions {
		t.Fatal("down did not restore version 10's functions")
	}
	if got := scenario(t, db.Pool, lifecycleScenarioSQL); got != lifecycle {
		t.Fatalf("the audit writes differently after down:\n%s\nbefore:\n%s", got, lifecycle)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
