package sweep_test

import (
	"context"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/sweep"
)

// The adaptive schedule wakes when the next row can become eligible, not at
// its ceiling (an hour here), and does not poll in between.
func TestAdaptiveScheduleWakesWhenARowCanBecomeEligible(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('beating', 'c', 'w', 'in_progress', now())`)
	r := newRuns()
	s := newSweeper(t, db.Pool, sweep.Config{
		Schedule:         sweep.ScheduleAdaptive,
		HeartbeatTimeout: 2 * time.Second,
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
	// Start-up run, the run at the eligibility boundary, and at most a
	// couple more if the database clock was a hair behind: not a poll loop.
	if n := r.n.Load(); n > 5 {
		t.Fatalf("%d runs to catch one row: the schedule polled", n)
	}
	// Nothing is in flight now: the run says so, and the next wake is the
	// ceiling (TestAdaptiveWait), so no run comes until then.
	if res.NextEligibleIn != nil {
		t.Fatalf("after the last row was swept, next eligible in %s, want none", *res.NextEligibleIn)
	}
}
