package migrations_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksweeper/sweeper/migrations"
)

// webhooksVersion is the migration of issue 22.
const webhooksVersion = 9

// traceKey is the traceparent of a delegation in rowsText's JSON.
var traceKey = regexp.MustCompile(`"traceparent": (null|"[^"]*"), `)

// The webhooks migration on a ledger populated by the version before it: up
// keeps every row and event (traceparent NULL everywhere) and creates the
// subscription and attempt tables, whose CHECKs refuse bad rows written by
// other clients; the new CHECK on traceparent holds for new writes; down,
// after subscriptions, attempts and traceparents were written, restores the
// previous schema with the data intact, and up runs again.
func TestWebhooksMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, webhooksVersion)
	ctx := context.Background()

	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status)
		SELECT 'm-' || g, 'caller' || (g % 3), 'callee' || (g % 2), 'task ' || g, 'queued'
		FROM generate_series(1, 100) AS g`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'in_progress'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout'
		WHERE substr(delegation_id, 3)::int % 10 < 3`)
	beforeRows, beforeEvents := rowsText(t, db.Pool)
	before := objects(t, db.Pool)

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != webhooksVersion || dirty {
		t.Fatalf("after up: version %d dirty %v, %v", v, dirty, err)
	}
	if n := mustOne[int64](t, db.Pool, `SELECT count(*) FROM delegations WHERE traceparent IS NULL`); n != 100 {
		t.Fatalf("%d of 100 rows have a NULL traceparent", n)
	}
	rowsNoTrace := func() ([]string, []string) {
		r, e := rowsText(t, db.Pool)
		for i := range r {
			r[i] = traceKey.ReplaceAllString(r[i], "")
		}
		return r, e
	}
	if r, e := rowsNoTrace(); !slices.Equal(r, beforeRows) || !slices.Equal(e, beforeEvents) {
		t.Fatalf("up changed the rows or the events:\n%v\n%v", r[:1], beforeRows[:1])
	}

	// The database refuses what the Go code never writes.
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	mustExec(t, db.Pool, `UPDATE delegations SET traceparent = $1 WHERE delegation_id = 'm-5'`, tp)
	const sub = `INSERT INTO webhook_subscriptions (id, url, events, caller_id, secret) VALUES ($1, $2, $3, $4, $5)`
	const okID, okURL, okSecret = "wh_0123456789abcdef01234567", "https://example.com/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	mustExec(t, db.Pool, sub, okID, okURL, []string{"stuck", "failed"}, "caller1", okSecret)
	mustExec(t, db.Pool, `INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, status_code, latency_ms, outcome, response)
		VALUES ($1, 1, 'msg_1', 200, 12, 'delivered', 'ok')`, okID)
	for _, c := range []struct {
		name, sql string
		args      []any
	}{
		{"bad traceparent", `UPDATE delegations SET traceparent = 'nope' WHERE delegation_id = 'm-6'`, nil},
		{"zero trace id", `UPDATE delegations SET traceparent = '00-00000000000000000000000000000000-b7ad6b7169203331-01' WHERE delegation_id = 'm-6'`, nil},
		{"upper-case traceparent", `UPDATE delegations SET traceparent = upper($1) WHERE delegation_id = 'm-6'`, []any{tp}},
		{"bad id", sub, []any{"wh_x", okURL, []string{}, nil, okSecret}},
		{"ftp url", sub, []any{"wh_0123456789abcdef01234568", "ftp://example.com/x", []string{}, nil, okSecret}},
		{"unknown event", sub, []any{"wh_0123456789abcdef01234568", okURL, []string{"exploded"}, nil, okSecret}},
		{"empty caller", sub, []any{"wh_0123456789abcdef01234568", okURL, []string{}, "", okSecret}},
		{"short secret", sub, []any{"wh_0123456789abcdef01234568", okURL, []string{}, nil, "whsec_abc"}},
		{"bad state", `UPDATE webhook_subscriptions SET state = 'sleeping'`, nil},
		{"lease without expiry", `UPDATE webhook_subscriptions SET lease_owner = 'r1'`, nil},
		{"previous secret without expiry", `UPDATE webhook_subscriptions SET previous_secret = secret`, nil},
		{"long response", `INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, latency_ms, outcome, response)
			VALUES ($1, 1, 'msg_1', 1, 'failed', repeat('x', 1025))`, []any{okID}},
		{"attempt of no subscription", `INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, latency_ms, outcome)
			VALUES ('wh_0123456789abcdef0123456f', 1, 'msg_1', 1, 'failed')`, nil},
	} {
		_, err := db.Pool.Exec(ctx, c.sql, c.args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "23514" && pgErr.Code != "23503") {
			t.Errorf("%s: want a check or foreign key violation, got %v", c.name, err)
		}
	}
	// A subscription's attempts leave with it.
	mustExec(t, db.Pool, `DELETE FROM webhook_subscriptions WHERE id = $1`, okID)
	if n := mustOne[int64](t, db.Pool, `SELECT count(*) FROM webhook_attempts`); n != 0 {
		t.Fatalf("%d attempts outlived their subscription", n)
	}
	mustExec(t, db.Pool, sub, okID, okURL, []string{}, nil, okSecret)
	beforeRows, beforeEvents = rowsNoTrace()

	if err := mg.Steps(-1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, err := mg.Version(); err != nil || v != previous || dirty {
		t.Fatalf("after down: version %d dirty %v, %v", v, dirty, err)
	}
	if got := objects(t, db.Pool); !slices.Equal(got, before) {
		t.Fatalf("down left a different schema:\n%v\nwant\n%v", got, before)
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
