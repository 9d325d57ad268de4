package migrations_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/migrations"
)

// populateV1 writes delegations and their events the way version 1 does.
func populateV1(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('d1', 'billing', 'agent-a'), ('d2', 'search', 'agent-b')`,
		`UPDATE delegations SET status = 'in_progress' WHERE delegation_id = 'd1'`,
		`UPDATE delegations SET status = 'completed' WHERE delegation_id = 'd1'`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// Version 2 applied to a populated version 1 database: the events written
// before it get their caller and callee, the new audit trigger and the
// notification work, and down returns exactly the version 1 schema with the
// data intact.
func TestAPITokensUpDownOnPopulatedV1(t *testing.T) {
	t.Parallel()
	db := testdb.NewEmpty(t)
	ctx := context.Background()
	mg, err := migrations.Open(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	v1 := objects(t, db.Pool)
	populateV1(t, db.Pool)

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != 2 || dirty || migrations.Latest < 2 {
		t.Fatalf("version = %d dirty %v, %v (Latest %d)", v, dirty, err, migrations.Latest)
	}
	n := countWhere(t, db.Pool, `SELECT count(*) FROM delegation_events WHERE caller_id IS NULL OR callee_id IS NULL`)
	if n != 0 {
		t.Fatalf("%d events not backfilled", n)
	}
	if n := countWhere(t, db.Pool, `SELECT count(*) FROM delegation_events WHERE caller_id = 'billing' AND callee_id = 'agent-a'`); n != 3 {
		t.Fatalf("d1 has %d backfilled events, want 3", n)
	}
	// The audit log is append-only again after the backfill.
	if _, err := db.Pool.Exec(ctx, `UPDATE delegation_events SET actor = 'x'`); err == nil {
		t.Fatal("delegation_events accepted an UPDATE after the migration")
	}

	// New events carry caller and callee and notify once per statement.
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN sweeper_events`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('d3', 'billing', 'agent-c'), ('d4', 'billing', 'agent-c')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countWhere(t, db.Pool, `SELECT count(*) FROM delegation_events WHERE callee_id = 'agent-c' AND caller_id = 'billing'`); n != 2 {
		t.Fatalf("new events with caller and callee = %d, want 2", n)
	}
	// Tokens: a caller token needs a principal, the hash is 32 bytes.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO api_tokens (name, role, hash) VALUES ('c', 'caller', decode(repeat('ab', 32), 'hex'))`); err == nil {
		t.Fatal("caller token without principal accepted")
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO api_tokens (name, role, hash) VALUES ('r', 'reader', '\x00')`); err == nil {
		t.Fatal("short hash accepted")
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO api_tokens (name, role, principal, hash) VALUES ('c', 'caller', 'billing', decode(repeat('ab', 32), 'hex'))`); err != nil {
		t.Fatal(err)
	}

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if got := objects(t, db.Pool); !slices.Equal(v1, got) {
		t.Fatalf("down to 1 differs from version 1:\n%v\n%v", v1, got)
	}
	if n := countWhere(t, db.Pool, `SELECT count(*) FROM delegation_events`); n != 6 {
		t.Fatalf("after down %d events, want 6", n)
	}
	// Version 1's audit trigger works again (it would fail on dropped columns).
	if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET status = 'failed' WHERE delegation_id = 'd2'`); err != nil {
		t.Fatal(err)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if n := countWhere(t, db.Pool, `SELECT count(*) FROM delegation_events WHERE caller_id IS NULL`); n != 0 {
		t.Fatalf("second up left %d events without caller", n)
	}
}

func countWhere(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
