package sweep_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

// The heartbeat index holds last_heartbeat to the minute; the rule is still
// exact: a row a second short of the timeout is left, a row a second past it
// is marked, including two rows in the same minute on either side of the
// boundary.
func TestHeartbeatRuleExactWithinAMinute(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	// A timeout that puts the boundary (now - timeout) half way through a
	// minute m; "past" beat at m+10s, "short" at m+50s: the same minute in
	// the index, on either side of the boundary for the next 20 seconds.
	var now, m time.Time
	if err := db.Pool.QueryRow(ctx, `
		SELECT now(), date_bin('1 minute', now() - interval '10 minutes', TIMESTAMPTZ '2000-01-01 00:00:00+00')`).Scan(&now, &m); err != nil {
		t.Fatal(err)
	}
	timeout := now.Sub(m.Add(30 * time.Second))
	exec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('past', 'c', 'w', 'in_progress', $1), ('short', 'c', 'w', 'in_progress', $2)`,
		m.Add(10*time.Second), m.Add(50*time.Second))
	if one[int](t, db.Pool, `SELECT count(DISTINCT heartbeat_minute)::int FROM delegations`) != 1 {
		t.Fatal("the two heartbeats are not in the same minute")
	}
	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: timeout})
	res, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.SweptHeartbeatTimeout != 1 {
		t.Fatalf("swept %d rows, want 1: %+v", res.SweptHeartbeatTimeout, res)
	}
	if st, _ := statusOf(t, db.Pool, "past"); st != ledger.StatusStuck {
		t.Fatalf("past = %s", st)
	}
	if st, _ := statusOf(t, db.Pool, "short"); st != ledger.StatusInProgress {
		t.Fatalf("short = %s", st)
	}
}

// The oldest-heartbeat gauge and the adaptive schedule's next eligibility
// are exact when the oldest heartbeat is near the timeout, and otherwise
// never later than the truth and at most a minute early.
func TestGaugesFromHeartbeatMinute(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	const timeout = 10 * time.Minute
	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: timeout})

	// Fresh heartbeats only: a lower bound, within a minute.
	seed(t, db.Pool, "fresh-1", ledger.StatusInProgress, 10*time.Second, time.Hour)
	seed(t, db.Pool, "fresh-2", ledger.StatusInProgress, 20*time.Second, time.Hour)
	res, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.OldestHeartbeatAge < 20*time.Second || res.OldestHeartbeatAge > 81*time.Second {
		t.Errorf("oldest heartbeat age %s, want 20s to 1m20s", res.OldestHeartbeatAge)
	}
	if res.NextEligibleIn == nil || *res.NextEligibleIn > timeout-20*time.Second || *res.NextEligibleIn < timeout-81*time.Second {
		t.Errorf("next eligible in %v, want at most %s and at least %s", res.NextEligibleIn, timeout-20*time.Second, timeout-81*time.Second)
	}

	// A heartbeat near the timeout: exact.
	seed(t, db.Pool, "near", ledger.StatusInProgress, timeout-30*time.Second, time.Hour)
	res, err = s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := res.OldestHeartbeatAge - (timeout - 30*time.Second); d < 0 || d > 5*time.Second {
		t.Errorf("oldest heartbeat age %s, want %s (exact)", res.OldestHeartbeatAge, timeout-30*time.Second)
	}
	if res.NextEligibleIn == nil || *res.NextEligibleIn > 30*time.Second || *res.NextEligibleIn < 25*time.Second {
		t.Errorf("next eligible in %v, want about 30s (exact)", res.NextEligibleIn)
	}
}

// The in-flight count is recounted after a run that marked rows, after
// InFlightRecount, or on every run with a negative InFlightRecount, and
// reused in between.
func TestInFlightRecount(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	for i := range 3 {
		seed(t, db.Pool, fmt.Sprintf("live-%d", i), ledger.StatusInProgress, 0, time.Hour)
	}
	cached := newSweeper(t, db.Pool, sweep.Config{InFlightRecount: time.Hour})
	every := newSweeper(t, db.Pool, sweep.Config{InFlightRecount: -1})
	for _, s := range []*sweep.Sweeper{cached, every} {
		if res, err := s.RunOnce(ctx); err != nil || res.InFlight != 3 {
			t.Fatalf("first run: %+v, %v", res, err)
		}
	}
	seed(t, db.Pool, "late", ledger.StatusQueued, 0, -time.Second)
	seed(t, db.Pool, "new", ledger.StatusQueued, 0, time.Hour)
	if res, err := every.RunOnce(ctx); err != nil || res.InFlight != 4 || res.Swept != 1 {
		t.Fatalf("recounting every run: %+v, %v", res, err)
	}
	// The cached sweeper marked nothing (the other did): it reuses its count.
	if res, err := cached.RunOnce(ctx); err != nil || res.InFlight != 3 || res.Swept != 0 {
		t.Fatalf("within InFlightRecount: %+v, %v", res, err)
	}
	seed(t, db.Pool, "late-2", ledger.StatusQueued, 0, -time.Second)
	if res, err := cached.RunOnce(ctx); err != nil || res.InFlight != 4 || res.Swept != 1 {
		t.Fatalf("after marking rows: %+v, %v", res, err)
	}
}

// When the oldest minute near the timeout holds more rows than the gauges
// read, they fall back to the minute itself: the age is never understated
// and the adaptive schedule's next wake is never late.
func TestGaugesManyRowsInTheOldestMinute(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	const timeout = 10 * time.Minute
	// 300 rows beating at m+30s, a minute about a minute from the timeout.
	var m time.Time
	if err := db.Pool.QueryRow(ctx, `
		SELECT date_bin('1 minute', now() - make_interval(secs => $1) + interval '1 minute', TIMESTAMPTZ '2000-01-01 00:00:00+00')`,
		timeout.Seconds()).Scan(&m); err != nil {
		t.Fatal(err)
	}
	beat := m.Add(30 * time.Second)
	exec(t, db.Pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'many-' || g, 'c', 'w', 'in_progress', $1 FROM generate_series(1, 300) g`, beat)
	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: timeout})
	res, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trueAge := time.Since(beat)
	if res.OldestHeartbeatAge < trueAge-time.Second || res.OldestHeartbeatAge > trueAge+time.Minute {
		t.Errorf("oldest heartbeat age %s, want between %s and a minute more", res.OldestHeartbeatAge, trueAge)
	}
	trueNext := time.Until(beat.Add(timeout))
	if res.NextEligibleIn == nil || *res.NextEligibleIn > trueNext+time.Second || *res.NextEligibleIn < trueNext-time.Minute-time.Second {
		t.Errorf("next eligible in %v, want at most %s and at most a minute less", res.NextEligibleIn, trueNext)
	}
}
