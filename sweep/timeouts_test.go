package sweep_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// seedOwn inserts an in_progress row with raw SQL, with its own heartbeat
// timeout (seconds; 0 for NULL, the global one) and a heartbeat hbAge ago by
// the database clock.
func seedOwn(t *testing.T, db *testdb.DB, id string, timeout, hbAge time.Duration) {
	t.Helper()
	exec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, heartbeat_timeout)
		VALUES ($1, 'caller', 'callee', 'in_progress', now() - make_interval(secs => $2),
		        CASE WHEN $3 > 0 THEN make_interval(secs => $3) END)`,
		id, hbAge.Seconds(), timeout.Seconds())
}

// Mixed timeouts, 30 s, 10 min and NULL (the global one, 5 min here), each
// two seconds either side of its boundary, written by raw SQL: each row is
// judged by its own timeout, by the database clock.
func TestMixedHeartbeatTimeoutsAroundTheirBoundaries(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	const margin = 2 * time.Second
	rows := []struct {
		id        string
		timeout   time.Duration
		hbAge     time.Duration
		wantStuck bool
	}{
		{"30s-over", 30 * time.Second, 30*time.Second + margin, true},
		{"30s-under", 30 * time.Second, 30*time.Second - margin, false},
		{"30s-a-minute", 30 * time.Second, time.Minute, true}, // under the global timeout, over its own
		{"10m-over", 10 * time.Minute, 10*time.Minute + margin, true},
		{"10m-under", 10 * time.Minute, 10*time.Minute - margin, false},
		{"10m-past-global", 10 * time.Minute, 7 * time.Minute, false}, // over the global timeout, under its own
		{"global-over", 0, 5*time.Minute + margin, true},
		{"global-under", 0, 5*time.Minute - margin, false},
		{"7d-hours", 7 * 24 * time.Hour, 30 * time.Hour, false},
	}
	for _, r := range rows {
		seedOwn(t, db, r.id, r.timeout, r.hbAge)
	}
	// A raw-SQL writer that changes a row's timeout later: judged by the new one.
	seedOwn(t, db, "changed-to-30s", 0, time.Minute)
	exec(t, db.Pool, `UPDATE delegations SET heartbeat_timeout = interval '30 seconds' WHERE delegation_id = 'changed-to-30s'`)
	// A writer that writes the trigger-kept expiry itself is put right.
	seedOwn(t, db, "forged-expiry", 30*time.Second, time.Minute)
	exec(t, db.Pool, `UPDATE delegations SET heartbeat_expires_at = now() + interval '1 year' WHERE delegation_id = 'forged-expiry'`)
	if one[bool](t, db.Pool, `SELECT heartbeat_expires_at > now() FROM delegations WHERE delegation_id = 'forged-expiry'`) {
		t.Fatal("a writer set heartbeat_expires_at to what it liked")
	}

	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN `+sweep.NotifyChannelDefault); err != nil {
		t.Fatal(err)
	}

	dry := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: 5 * time.Minute, DryRun: true})
	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: 5 * time.Minute})
	would, err := dry.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const wantSwept = 6 // 30s-over, 30s-a-minute, 10m-over, global-over, changed-to-30s, forged-expiry
	if res.Swept != wantSwept || res.SweptHeartbeatTimeout != wantSwept || would.SweptHeartbeatTimeout != wantSwept {
		t.Fatalf("run = %+v, dry run = %+v, want %d by heartbeat", res, would, wantSwept)
	}
	for _, r := range rows {
		st, reason := statusOf(t, db.Pool, r.id)
		if r.wantStuck != (st == ledger.StatusStuck) || (r.wantStuck && reason != sweep.ReasonHeartbeatTimeout) {
			t.Errorf("%s (timeout %s, heartbeat %s old): %s/%q, want stuck %v", r.id, r.timeout, r.hbAge, st, reason, r.wantStuck)
		}
	}
	for _, id := range []string{"changed-to-30s", "forged-expiry"} {
		if st, _ := statusOf(t, db.Pool, id); st != ledger.StatusStuck {
			t.Errorf("%s: %s, want stuck", id, st)
		}
	}
	// Every notification carries the attempt.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for range wantSwept {
		note, err := listener.WaitForNotification(wctx)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			DelegationID string `json:"delegation_id"`
			Attempt      *int   `json:"attempt"`
		}
		if err := json.Unmarshal([]byte(note.Payload), &p); err != nil || p.Attempt == nil || *p.Attempt != 1 {
			t.Fatalf("payload %q: %v, want attempt 1", note.Payload, err)
		}
	}
	// The nearest row left is 30s-under, two seconds from its boundary: the
	// run says so exactly, not to its bin.
	if res.NextEligibleIn == nil || *res.NextEligibleIn > margin || *res.NextEligibleIn < margin-time.Second {
		t.Fatalf("next eligible in %v, want about %s", res.NextEligibleIn, margin)
	}
	// The oldest heartbeat gauge is of rows on the global timeout.
	if res.OldestHeartbeatAge < 5*time.Minute-margin || res.OldestHeartbeatAge > 5*time.Minute {
		t.Fatalf("oldest heartbeat age %s, want about %s", res.OldestHeartbeatAge, 5*time.Minute-margin)
	}
}

// A delegation inserted through the ledger with its own timeout, then
// retried: the sweep marks the attempt by its own timeout and the
// notification names attempt 2.
func TestOwnTimeoutThroughTheLedgerAndAttemptInPayload(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "job", CallerID: "c", CalleeID: "w",
		Status: ledger.StatusInProgress, HeartbeatTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	exec(t, db.Pool, `UPDATE delegations SET status = 'failed' WHERE delegation_id = 'job'`)
	if res, err := l.Retry(ctx, "job", ledger.RetryOptions{Status: ledger.StatusInProgress}); err != nil || res.Outcome != ledger.RetryCreated {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	// Its worker's last heartbeat, 31 s ago by the database clock.
	exec(t, db.Pool, `UPDATE delegations SET last_heartbeat = now() - interval '31 seconds' WHERE delegation_id = 'job#2'`)

	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN `+sweep.NotifyChannelDefault); err != nil {
		t.Fatal(err)
	}
	res, err := newSweeper(t, db.Pool, sweep.Config{}).RunOnce(ctx)
	if err != nil || res.SweptHeartbeatTimeout != 1 {
		t.Fatalf("run = %+v, %v", res, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	note, err := listener.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		DelegationID string `json:"delegation_id"`
		Attempt      int    `json:"attempt"`
	}
	if err := json.Unmarshal([]byte(note.Payload), &p); err != nil || p.DelegationID != "job#2" || p.Attempt != 2 {
		t.Fatalf("payload %q: %v", note.Payload, err)
	}
	// The audit event says the row was judged by its own timeout, not by
	// the daemon's (which its detail would otherwise claim); the database
	// adds the ages of its heartbeat and progress (migration 7).
	if d := one[string](t, db.Pool, `SELECT (detail - 'progress_age_seconds' - 'heartbeat_age_seconds')::text
		FROM delegation_events
		WHERE delegation_id = 'job#2' AND to_status = 'stuck' AND actor = 'sweeper'
		  AND (detail->>'heartbeat_age_seconds')::float8 > 30`); d != `{"heartbeat_timeout": "own"}` {
		t.Errorf("stuck event detail %s, want {\"heartbeat_timeout\": \"own\"} and a heartbeat older than 30 s", d)
	}
	// Stuck: the chain can go on.
	if res, err := l.Retry(ctx, "job#2", ledger.RetryOptions{}); err != nil || res.DelegationID != "job#3" {
		t.Fatalf("retry of the stuck attempt: %+v, %v", res, err)
	}
}

// Heartbeats of a row with its own timeout are HOT updates within its bin,
// as those of a row on the global timeout (issue 14 keeps issue 9's fast
// path): measured with pg_stat_user_tables' n_tup_hot_upd after the
// statistics are flushed.
func TestOwnTimeoutHeartbeatsAreHOT(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	for _, id := range []string{"own-10m", "own-30s", "global"} {
		nd := ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w", Status: ledger.StatusInProgress}
		switch id {
		case "own-10m":
			nd.HeartbeatTimeout = 10 * time.Minute
		case "own-30s":
			nd.HeartbeatTimeout = 30 * time.Second
		}
		if _, err := l.Insert(ctx, nd); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	stats := func() (upd, hot int64) {
		t.Helper()
		if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		// A new transaction sees the flushed counters (the snapshot of
		// statistics is per transaction).
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'delegations'`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		return upd, hot
	}
	// One transaction, one now(): the first write puts the rows in this
	// bin, the heartbeats then stay in it.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE delegations SET last_heartbeat = now(), updated_at = now()`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	upd0, hot0 := stats()
	lc := ledger.New(conn)
	const beats = 20
	for range beats {
		// Each heartbeat its own statement, all within a second: within the
		// bin of the 30 s timeout (15 s) unless a bin boundary falls in it.
		if notLive, err := lc.HeartbeatMany(ctx, []string{"own-10m", "own-30s", "global"}); err != nil || len(notLive) != 0 {
			t.Fatalf("HeartbeatMany: %v, %v", notLive, err)
		}
	}
	upd1, hot1 := stats()
	upd, hot := upd1-upd0, hot1-hot0
	if upd != 3*beats {
		t.Fatalf("%d updates, want %d", upd, 3*beats)
	}
	// A bin boundary (every 15 s for the 30 s row, every minute for the
	// others) may fall within the loop once: at most three updates are not HOT.
	if hot < upd-3 {
		t.Fatalf("%d of %d heartbeats were HOT updates, want at least %d", hot, upd, upd-3)
	}
	t.Logf("heartbeats: %d updates, %d HOT (%.0f%%)", upd, hot, 100*float64(hot)/float64(upd))
}

// The adaptive schedule wakes for a row with its own timeout (2 s here, the
// global one an hour), not at its ceiling, and does not poll in between.
func TestAdaptiveScheduleWakesForOwnTimeout(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, heartbeat_timeout)
		VALUES ('beating', 'c', 'w', 'in_progress', now(), interval '2 seconds'),
		       ('global', 'c', 'w', 'in_progress', now(), NULL)`)
	r := newRuns()
	s := newSweeper(t, db.Pool, sweep.Config{
		Schedule:         sweep.ScheduleAdaptive,
		HeartbeatTimeout: time.Hour,
		AdaptiveFloor:    10 * time.Millisecond,
		AdaptiveCeiling:  time.Hour,
		OnRun:            r.onRun,
	})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	first := r.wait(t)
	if first.Swept != 0 || first.NextEligibleIn == nil || *first.NextEligibleIn > 2*time.Second {
		t.Fatalf("first run = %+v, want nothing swept and the next eligibility within 2s", first)
	}
	var res sweep.Result
	for res.Swept != 1 {
		res = r.wait(t)
	}
	if n := r.n.Load(); n > 5 {
		t.Fatalf("%d runs to catch one row: the schedule polled", n)
	}
	if st, _ := statusOf(t, db.Pool, "beating"); st != ledger.StatusStuck {
		t.Fatalf("beating = %s", st)
	}
	// What is left is the global row, an hour away.
	if res.NextEligibleIn == nil || *res.NextEligibleIn < 58*time.Minute { // the minute bin: up to a minute early, plus the run
		t.Fatalf("after the sweep, next eligible in %v, want about an hour", res.NextEligibleIn)
	}
}
