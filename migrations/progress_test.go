package migrations_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/migrations"
)

// progressVersion is the migration of issue 20.
const progressVersion = 7

// The progress migration on a ledger populated at the version before it:
// up keeps every row and event, starts the clocks of the rows in flight
// (in_progress rows' progress_at now, dispatched rows' dispatched_at from
// their audited move) without writing an event; the new version then takes
// progress and marks rows stalled; down maps the new reasons to old ones
// and restores the previous schema exactly, and up runs again.
func TestProgressMigrationOnPopulatedLedger(t *testing.T) {
	t.Parallel()
	db, mg, previous := atVersionBefore(t, progressVersion)
	ctx := context.Background()

	mustExec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, task_preview, status)
		SELECT 'm-' || s || '-' || g, 'caller', 'callee', 'task ' || g, 'queued'
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
	beforeRows, beforeEvents := rowsText(t, db.Pool)
	if rows != 120 {
		t.Fatalf("populated %d rows", rows)
	}

	if err := mg.Steps(1); err != nil {
		t.Fatal(err)
	}
	if v, dirty, _ := mg.Version(); v != progressVersion || dirty {
		t.Fatalf("version after up = %d dirty %v", v, dirty)
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegation_events`); got != events {
		t.Fatalf("events %d, want %d", got, events)
	}
	if got := mustOne[string](t, db.Pool, oldColumnsDigest); got != digest {
		t.Fatal("up changed existing rows")
	}
	for _, c := range []struct{ what, sql string }{
		{"in_progress rows with progress_at and its minute", `SELECT count(*) FROM delegations WHERE status = 'in_progress'
			AND progress_at IS NOT NULL AND progress_minute = date_bin('1 minute', progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')`},
		{"dispatched rows dispatched when their event says", `SELECT count(*) FROM delegations d WHERE status = 'dispatched'
			AND dispatched_at = (SELECT e.at FROM delegation_events e WHERE e.delegation_id = d.delegation_id AND e.to_status = 'dispatched')`},
	} {
		if got := mustOne[int](t, db.Pool, c.sql); got != 20 {
			t.Fatalf("%s: %d, want 20", c.what, got)
		}
	}
	if got := mustOne[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE progress IS NOT NULL
		OR (status NOT IN ('in_progress') AND progress_at IS NOT NULL)
		OR (status <> 'dispatched' AND dispatched_at IS NOT NULL)`); got != 0 {
		t.Fatalf("%d rows with clocks they should not have", got)
	}

	// The new version at work: progress, a stalled row (raw SQL, as another
	// writer would), a heartbeat that learns why. Through the ledger of this
	// build, whose statements need the latest schema: up to it, and back
	// down below this version afterwards.
	versions := upVersions(t)
	above := len(versions) - 1 - slices.Index(versions, progressVersion)
	if err := mg.Steps(above); err != nil {
		t.Fatal(err)
	}
	l := ledger.New(db.Pool)
	if res, err := l.HeartbeatProgress(ctx, "m-in_progress-1", json.RawMessage(`{"step": 2}`)); err != nil || !res.Live {
		t.Fatalf("heartbeat with progress: %+v, %v", res, err)
	}
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'stalled' WHERE delegation_id = 'm-in_progress-1'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'queue_timeout' WHERE delegation_id = 'm-queued-1'`)
	mustExec(t, db.Pool, `UPDATE delegations SET status = 'stuck', stuck_reason = 'start_timeout' WHERE delegation_id = 'm-dispatched-1'`)
	if res, err := l.Heartbeat(ctx, "m-in_progress-1"); err != nil || res.Reason != "stalled" {
		t.Fatalf("heartbeat on the stalled row: %+v, %v", res, err)
	}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "new-own", CallerID: "caller", CalleeID: "callee",
		Status: ledger.StatusQueued, QueueTimeout: time.Minute}); err != nil {
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
	for id, want := range map[string]string{"m-in_progress-1": "heartbeat_timeout", "m-queued-1": "deadline_exceeded", "m-dispatched-1": "deadline_exceeded"} {
		if got := mustOne[string](t, db.Pool, `SELECT stuck_reason FROM delegations WHERE delegation_id = $1`, id); got != want {
			t.Errorf("%s: stuck_reason %s after down, want %s", id, got, want)
		}
	}
	// The rows the new version did not touch are as they were; the events
	// of the new version's moves stay (the log is append-only).
	afterRows, afterEvents := rowsText(t, db.Pool)
	untouched := func(rs []string) []string {
		return slices.DeleteFunc(slices.Clone(rs), func(r string) bool {
			return slices.ContainsFunc([]string{"m-in_progress-1", "m-queued-1", "m-dispatched-1", "new-own"},
				func(id string) bool { return strings.Contains(r, `"delegation_id": "`+id+`"`) })
		})
	}
	if !slices.Equal(untouched(beforeRows), untouched(afterRows)) {
		t.Fatal("down changed rows the new version did not touch")
	}
	if len(afterEvents) != len(beforeEvents)+4 {
		t.Fatalf("%d events after down, want %d", len(afterEvents), len(beforeEvents)+4)
	}

	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := mg.Version(); v != migrations.Latest {
		t.Fatalf("up again: version %d, want %d", v, migrations.Latest)
	}
}
