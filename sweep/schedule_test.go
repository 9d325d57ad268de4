package sweep_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/sweep"
)

// runs counts OnRun calls and lets a test wait for the next one.
type runs struct {
	n  atomic.Int64
	ch chan sweep.Result
}

func newRuns() *runs { return &runs{ch: make(chan sweep.Result, 100)} }

func (r *runs) onRun(res sweep.Result, err error) {
	r.n.Add(1)
	if err == nil {
		select {
		case r.ch <- res:
		default:
		}
	}
}

func (r *runs) wait(t *testing.T) sweep.Result {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(30 * time.Second):
		t.Fatal("no sweep run within 30s")
		return sweep.Result{}
	}
}

func TestStartRunsAtOnceThenOnSchedule(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('old', 'c', 'w', 'in_progress', now() - interval '1 hour')`)
	r := newRuns()
	s := newSweeper(t, db.Pool, sweep.Config{Schedule: "@every 1s", OnRun: r.onRun, Logger: zaptest.NewLogger(t)})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	// The first run does not wait for the schedule.
	if res := r.wait(t); res.Swept != 1 {
		t.Fatalf("first run = %+v", res)
	}
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, deadline)
		VALUES ('late', 'c', 'w', 'queued', now() - interval '1 second')`)
	for {
		if res := r.wait(t); res.Swept == 1 && res.SweptDeadlineExceeded == 1 {
			break
		}
	}
}

// Start and Stop in any order, many times: Stop is idempotent, Start after
// Stop works, and nothing is left running (TestMain checks with goleak).
func TestStartStopAnyOrder(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	r := newRuns()
	s := newSweeper(t, db.Pool, sweep.Config{Schedule: "@every 1s", OnRun: r.onRun})
	s.Stop() // before any Start
	for i := range 20 {
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if i%3 == 0 {
			r.wait(t)
		}
		s.Stop()
		s.Stop()
	}
	if r.n.Load() < 7 {
		t.Fatalf("%d runs over 20 starts, want at least 7", r.n.Load())
	}
	// A cancelled parent context stops scheduled runs from doing anything.
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	s.Stop()
}

// Stop during a long drain: the run ends after the batch in flight commits;
// every batch is whole (rows and their events agree, in multiples of the
// batch size), and nothing changes after Stop returns.
func TestStopDuringDrainLeavesWholeBatches(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'r' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, 20000) g`)
	s := newSweeper(t, db.Pool, sweep.Config{Schedule: "@every 1h", BatchSize: 50, MaxBatchesPerRun: 100000})
	s.TestSignals.Init(t)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Stop once the drain has committed a batch.
	s.TestSignals.BatchDone.WaitFor("a batch that marked rows", func(b sweep.BatchOutcome) bool {
		if b.Err != nil {
			t.Errorf("batch failed: %v", b.Err)
		}
		return b.Swept > 0
	})
	s.Stop()
	stuck := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`)
	events := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`)
	if stuck != events || stuck%50 != 0 {
		t.Fatalf("%d stuck rows, %d events: want equal and whole batches of 50", stuck, events)
	}
	if stuck == 20000 {
		t.Log("the drain finished before Stop; nothing to interrupt")
	}
	if again := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`); again != stuck {
		t.Fatalf("rows changed after Stop returned: %d then %d", stuck, again)
	}
}

// RunOnce with a cancelled context stops before its next batch.
func TestRunOnceCancelled(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		VALUES ('old', 'c', 'w', 'in_progress', now() - interval '1 hour')`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := newSweeper(t, db.Pool, sweep.Config{})
	if _, err := s.RunOnce(ctx); err == nil {
		t.Fatal("RunOnce with a cancelled context succeeded")
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`); n != 0 {
		t.Fatalf("%d rows swept after cancel", n)
	}
}
