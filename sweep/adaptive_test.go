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
	for {
		res := r.wait(t)
		if res.Swept == 1 {
			break
		}
	}
	// Start-up run, the run at the eligibility boundary, and at most a
	// couple more if the database clock was a hair behind: not a poll loop.
	if n := r.n.Load(); n > 5 {
		t.Fatalf("%d runs to catch one row: the schedule polled", n)
	}
	// Nothing is in flight now: the next wake is the ceiling, so no more runs.
	before := r.n.Load()
	time.Sleep(300 * time.Millisecond)
	if after := r.n.Load(); after != before {
		t.Fatalf("%d runs with nothing in flight", after-before)
	}
}
