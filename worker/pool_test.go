package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/worker"
)

func insertFor(t *testing.T, l *ledger.Ledger, id, callee string, policy ledger.RetryPolicy) {
	t.Helper()
	if _, err := l.Insert(context.Background(), ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: callee, Retry: policy}); err != nil {
		t.Fatal(err)
	}
}

func startPool(t *testing.T, l *ledger.Ledger, cfg worker.PoolConfig, fn func(context.Context, *worker.Task) error) *worker.Pool {
	t.Helper()
	cfg.PollInterval = cmpOr(cfg.PollInterval, 5*time.Millisecond)
	cfg.Worker.HeartbeatInterval = 5 * time.Millisecond
	p, err := worker.NewPool(l, cfg, fn)
	if err != nil {
		t.Fatal(err)
	}
	p.TestSignals.Init(t)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// TestPoolWorksThroughDueWorkWithinItsBound: 20 delegations of one callee,
// 3 at a time: all completed, 3 ran at once and never more; another
// callee's row is not touched.
func TestPoolWorksThroughDueWorkWithinItsBound(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	for i := range 20 {
		insertFor(t, l, fmt.Sprintf("t-%02d", i), "renderer", ledger.RetryPolicy{})
	}
	insertFor(t, l, "other", "mailer", ledger.RetryPolicy{})
	var now, most atomic.Int32
	threeAtOnce := make(chan struct{})
	var once sync.Once
	p := startPool(t, l, worker.PoolConfig{CalleeID: "renderer", Concurrency: 3}, func(ctx context.Context, task *worker.Task) error {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if n == 3 {
			once.Do(func() { close(threeAtOnce) })
		}
		// The first tasks wait until three run at once.
		select {
		case <-threeAtOnce:
		case <-ctx.Done():
			return ctx.Err()
		}
		task.SetResult("rendered " + task.ID())
		return nil
	})
	for range 20 {
		if d := p.TestSignals.Done.Wait(); d.Err != nil {
			t.Fatalf("task %s: %v", d.DelegationID, d.Err)
		}
	}
	if m := most.Load(); m != 3 {
		t.Fatalf("at most %d tasks ran at once, want 3", m)
	}
	page, err := l.List(context.Background(), ledger.ListFilter{CalleeID: "renderer", Status: ledger.StatusCompleted, Limit: 100})
	if err != nil || len(page.Delegations) != 20 {
		t.Fatalf("%d completed, %v", len(page.Delegations), err)
	}
	if d, _ := l.Get(context.Background(), "other"); d.Status != ledger.StatusQueued {
		t.Fatalf("another callee's row: %s", d.Status)
	}
}

// TestPoolClaimsTheNextAttempt: a task that fails under a retry policy is
// retried by the database; the pool claims the next attempt once it is due.
func TestPoolClaimsTheNextAttempt(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	insertFor(t, l, "flaky", "renderer", ledger.RetryPolicy{MaxAttempts: 3, Backoff: 10 * time.Millisecond, On: []ledger.Status{ledger.StatusFailed}})
	var calls atomic.Int32
	p := startPool(t, l, worker.PoolConfig{CalleeID: "renderer", Concurrency: 2}, func(ctx context.Context, task *worker.Task) error {
		if calls.Add(1) < 3 {
			return errors.New("transient")
		}
		task.SetResult("third time")
		return nil
	})
	var ids []string
	for range 3 {
		d := p.TestSignals.Done.Wait()
		ids = append(ids, d.DelegationID)
	}
	chain, err := l.Attempts(context.Background(), "flaky")
	if err != nil || len(chain) != 3 {
		t.Fatalf("chain %+v, %v (ran %v)", chain, err, ids)
	}
	for i, want := range []ledger.Status{ledger.StatusFailed, ledger.StatusFailed, ledger.StatusCompleted} {
		if chain[i].Status != want || ids[i] != chain[i].DelegationID {
			t.Fatalf("attempt %d: %s %s, ran %v", i+1, chain[i].DelegationID, chain[i].Status, ids)
		}
	}
	if chain[0].ErrorDetail != "transient" || chain[2].ResultPreview != "third time" {
		t.Fatalf("chain %+v", chain)
	}
}

// TestPoolStopsGracefully: on Stop, a task that finishes within the grace
// is completed; one that does not is cancelled with ErrPoolStopped as the
// cause and recorded failed with that reason.
func TestPoolStopsGracefully(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	insertFor(t, l, "quick", "renderer", ledger.RetryPolicy{})
	insertFor(t, l, "slow", "renderer", ledger.RetryPolicy{})
	release := make(chan struct{})
	started := make(chan string, 2)
	var cause atomic.Value
	p := startPool(t, l, worker.PoolConfig{CalleeID: "renderer", Concurrency: 2, StopGrace: 200 * time.Millisecond},
		func(ctx context.Context, task *worker.Task) error {
			started <- task.ID()
			if task.ID() == "quick" {
				<-release
				return nil
			}
			<-ctx.Done()
			cause.Store(context.Cause(ctx))
			return ctx.Err()
		})
	for range 2 {
		<-started
	}
	stopped := make(chan struct{})
	go func() {
		p.Stop()
		close(stopped)
	}()
	if n := p.TestSignals.Stopping.Wait(); n != 2 {
		t.Fatalf("%d tasks running at stop, want 2", n)
	}
	close(release) // within the grace
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("Stop did not return within a minute")
	}
	if c, _ := cause.Load().(error); !errors.Is(c, worker.ErrPoolStopped) {
		t.Fatalf("the slow task's cause = %v", c)
	}
	ctx := context.Background()
	if d, _ := l.Get(ctx, "quick"); d.Status != ledger.StatusCompleted {
		t.Fatalf("quick: %s", d.Status)
	}
	d, _ := l.Get(ctx, "slow")
	if d.Status != ledger.StatusFailed || d.ErrorDetail != "worker stopped before the work ended: worker pool stopped and the grace period is over (200ms)" {
		t.Fatalf("slow: %s %q", d.Status, d.ErrorDetail)
	}
}

func TestNewPoolRefusesBadConfig(t *testing.T) {
	t.Parallel()
	l := ledger.New(nil)
	fn := func(context.Context, *worker.Task) error { return nil }
	for name, cfg := range map[string]worker.PoolConfig{
		"no callee":         {},
		"negative":          {CalleeID: "c", Concurrency: -1},
		"above claim limit": {CalleeID: "c", Concurrency: ledger.MaxClaimLimit + 1},
		"negative poll":     {CalleeID: "c", PollInterval: -1},
		"negative grace":    {CalleeID: "c", StopGrace: -1},
	} {
		if _, err := worker.NewPool(l, cfg, fn); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := worker.NewPool(l, worker.PoolConfig{CalleeID: "c"}, nil); err == nil {
		t.Error("nil fn accepted")
	}
}
