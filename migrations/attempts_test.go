package migrations_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
)

// attemptsVersion is the migration of issue 14.
const attemptsVersion = 4

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func mustOne[T any](t *testing.T, pool *pgxpool.Pool, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// oldColumnsDigest is a digest of the columns every version has, of the rows
// given by where: what migrating up and down must leave as it was.
const oldColumnsDigest = `
SELECT md5(string_agg(concat_ws('|', delegation_id, caller_id, callee_id, task_preview, result_preview,
                                error_detail, status, idempotency_key, last_heartbeat, deadline,
                                stuck_reason, created_at, updated_at), ',' ORDER BY delegation_id))
FROM delegations WHERE delegation_id LIKE 'm-%'`

// The attempts migration, from the version before it (the highest embedded
// version below it, whatever that is) on a populated ledger: up keeps every
// row and event and makes each row attempt 1 on the global timeout; down,
// after the new version wrote attempt chains and own timeouts, restores the
// previous schema exactly, and up runs again.
func TestAttemptsMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, attemptsVersion)
	ctx := context.Background()

	// Rows in every status, moved there by status changes (so with events),
	// some with idempotency keys, through raw SQL that every version accepts.
	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status, idempotency_key)
		SELECT 'm-' || s || '-' || g, 'caller', 'callee', 'task ' || g, 'queued',
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
	before := objects(t, db.Pool)
	if rows != 120 || events < 120+5*20 {
		t.Fatalf("populated %d rows, %d events", rows, events)
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != attemptsVersion {
		t.Fatalf("version after up = %d", v)
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE attempt = 1 AND retry_of IS NULL AND heartbeat_timeout IS NULL AND heartbeat_expires_at IS NULL`); got != rows {
		t.Fatalf("%d of %d rows are attempt 1 on the global timeout", got, rows)
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegation_events`); got != events {
		t.Fatalf("events %d, want %d", got, events)
	}
	if got := mustOne[string](t, db.Pool, oldColumnsDigest); got != digest {
		t.Fatal("up changed existing rows")
	}

	// The new version at work: the failed and stuck keys are free for the
	// next attempt; the completed one is not; rows with their own timeout.
	// Through the ledger of this build, whose statements need the latest
	// schema: up to it, and back down below this version afterwards.
	versions := upVersions(t)
	above := len(versions) - 1 - slices.Index(versions, attemptsVersion)
	if err := mg.Steps(above); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(db.Pool)
	for _, c := range []struct {
		key  string
		want ledger.InsertOutcome
	}{{"key-failed", ledger.Retried}, {"key-stuck", ledger.Retried}, {"key-completed", ledger.DuplicateKey}, {"key-in_progress", ledger.DuplicateKey}} {
		res, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "new-" + c.key, CallerID: "caller", CalleeID: "callee", IdempotencyKey: c.key})
		if err != nil || res.Outcome != c.want {
			t.Fatalf("insert under %s: %+v, %v; want %s", c.key, res, err, c.want)
		}
	}
	if res, err := l.Retry(ctx, "m-failed-2", ledger.RetryOptions{DelegationID: "new-retry", HeartbeatTimeout: 30 * time.Second}); err != nil || res.Outcome != ledger.RetryCreated {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "new-own", CallerID: "caller", CalleeID: "callee",
		Status: ledger.StatusInProgress, HeartbeatTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}

	if err := mg.Steps(-above - 1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != previous || dirty {
		t.Fatalf("version after down = %d dirty %v, want %d", v, dirty, previous)
	}
	if after := objects(t, db.Pool); !slices.Equal(before, after) {
		t.Fatalf("down did not restore the schema:\nbefore %v\nafter  %v", before, after)
	}
	for _, col := range []string{"attempt", "retry_of", "heartbeat_timeout", "heartbeat_expires_at"} {
		if n := mustOne[int](t, db.Pool, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'delegations' AND column_name = $1`, col); n != 0 {
			t.Errorf("column %s left after down", col)
		}
	}
	// The rows written before are as they were, except that a key whose
	// attempts continued is kept by its latest attempt only: the earlier,
	// failed or stuck, attempts lose it.
	mustExec(t, db.Pool, `CREATE TEMP TABLE released AS SELECT delegation_id FROM delegations WHERE delegation_id IN ('m-failed-1', 'm-stuck-1') AND idempotency_key IS NULL`)
	if n := mustOne[int](t, db.Pool, `SELECT count(*) FROM released`); n != 2 {
		t.Fatalf("%d superseded attempts released their key, want 2", n)
	}
	if n := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE idempotency_key IN ('key-failed', 'key-stuck') AND delegation_id LIKE 'new-%'`); n != 2 {
		t.Fatalf("%d latest attempts kept their key, want 2", n)
	}
	// With those two keys put back the digest is the one before up.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, s := range []string{
		`ALTER TABLE delegations DISABLE TRIGGER USER`,
		`DROP INDEX idx_delegations_caller_idempotency_key`,
		`UPDATE delegations SET idempotency_key = 'key-' || split_part(delegation_id, '-', 2) WHERE delegation_id IN ('m-failed-1', 'm-stuck-1')`,
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	if err := tx.QueryRow(ctx, oldColumnsDigest).Scan(&got); err != nil || got != digest {
		t.Fatalf("down changed existing rows beyond the released keys (%v)", err)
	}
	_ = tx.Rollback(ctx)
	if n := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegation_events`); n < events+4 {
		t.Fatalf("events after down %d, want the %d before and those of the new rows", n, events)
	}

	// And up again, on the ledger that down left.
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("version after up again = %d", v)
	}
}
