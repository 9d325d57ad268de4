package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// TestCoalescerAnswersEachCaller: many goroutines beat a mix of live,
// terminal and missing delegations at once; each gets its own answer, live
// rows get a fresh heartbeat, terminal rows are untouched, and the beats
// went out in far fewer statements than beats.
func TestCoalescerAnswersEachCaller(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()

	want := map[string]bool{}
	for i := range 40 {
		id := fmt.Sprintf("live-%d", i)
		st := ledger.StatusInProgress
		if i%4 == 0 {
			st = ledger.StatusQueued
		}
		moveTo(t, l, id, st)
		want[id] = true
	}
	for i, st := range []ledger.Status{ledger.StatusCompleted, ledger.StatusFailed, ledger.StatusStuck} {
		for j := range 5 {
			id := fmt.Sprintf("done-%d-%d", i, j)
			moveTo(t, l, id, st)
			want[id] = false
		}
	}
	for i := range 10 {
		want[fmt.Sprintf("missing-%d", i)] = false
	}
	if _, err := pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour' WHERE delegation_id LIKE 'live-%' AND status = 'in_progress'`); err != nil {
		t.Fatal(err)
	}
	var before time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&before); err != nil {
		t.Fatal(err)
	}

	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxBatch: 16, MaxDelay: 2 * time.Millisecond, Flushers: 2}, nil)

	const rounds = 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for id, live := range want {
		for r := range rounds {
			wg.Go(func() {
				got, err := c.Beat(ctx, id)
				if err != nil || got != live {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s round %d: live=%v err=%v, want live=%v", id, r, got, err, live))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d wrong answers, e.g. %s", len(wrong), wrong[0])
	}

	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id LIKE 'live-%' AND last_heartbeat >= $1`, before); n != 40 {
		t.Errorf("%d of 40 live rows have a fresh heartbeat", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE status IN ('completed','failed','stuck') AND (updated_at >= $1 OR last_heartbeat IS NOT NULL)`, before); n != 0 {
		t.Errorf("%d terminal rows were touched", n)
	}
	st := c.Stats()
	beats := int64(len(want) * rounds)
	if st.Beats != beats || st.Errors != 0 {
		t.Errorf("stats %+v, want %d beats and no errors", st, beats)
	}
	if st.Flushes >= beats/4 {
		t.Errorf("%d flushes for %d beats: not coalescing", st.Flushes, beats)
	}
	if st.IDs > st.Flushes*16 {
		t.Errorf("%d ids in %d flushes: a batch exceeded MaxBatch 16", st.IDs, st.Flushes)
	}
}

// TestCoalescerBackpressure: with one flusher and batches of two, a crowd of
// callers waits for room instead of growing batches past MaxBatch, and all
// are answered.
func TestCoalescerBackpressure(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	for i := range 20 {
		moveTo(t, l, fmt.Sprintf("bp-%d", i), ledger.StatusInProgress)
	}
	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxBatch: 2, MaxDelay: time.Hour, Flushers: 1}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			live, err := c.Beat(context.Background(), fmt.Sprintf("bp-%d", i))
			if err == nil && !live {
				err = fmt.Errorf("bp-%d not live", i)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// MaxDelay is an hour: only full batches were flushed.
	if st := c.Stats(); st.Flushes != 10 || st.IDs != 20 {
		t.Errorf("stats %+v, want 10 flushes of 2", st)
	}
}

func TestCoalescerRefusesInvalidIDsAndHonoursContext(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxDelay: time.Hour}, nil)

	_, err := c.Beat(context.Background(), "")
	var fe *ledger.FieldError
	if !errors.As(err, &fe) || fe.Field != "delegation_id" || !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("empty id: %v", err)
	}
	if _, err := c.Beat(context.Background(), "bad\x00id"); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("NUL in id: %v", err)
	}

	// The batch never fills and is due in an hour: the caller's context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Beat(ctx, "nobody"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled beat: %v", err)
	}
	if st := c.Stats(); st.Flushes != 0 {
		t.Fatalf("stats %+v: invalid ids or a pending batch were flushed", st)
	}
}

// TestCoalescerStopFlushesPending: Stop sends the batch being gathered,
// its callers get their answers, later beats are refused, and Stop is safe
// twice.
func TestCoalescerStopFlushesPending(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	moveTo(t, l, "pending", ledger.StatusInProgress)
	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxDelay: time.Hour}, func(c *ledger.Coalescer) {
		c.TestSignals.Init(t)
	})

	got := make(chan error, 1)
	go func() {
		live, err := c.Beat(context.Background(), "pending")
		if err == nil && !live {
			err = errors.New("pending: not live")
		}
		got <- err
	}()
	// Once the beat has joined the batch, stop: the batch is flushed.
	if id := c.TestSignals.Joined.Wait(); id != "pending" {
		t.Fatalf("joined %q, want pending", id)
	}
	c.Stop()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if f := c.TestSignals.Flushed.Wait(); f.IDs != 1 || f.Err != nil {
		t.Fatalf("flush on Stop = %+v, want the one pending id, no error", f)
	}
	if _, err := c.Beat(context.Background(), "pending"); !errors.Is(err, ledger.ErrCoalescerStopped) {
		t.Fatalf("beat after Stop: %v", err)
	}
	c.Stop()
}

// TestCoalescerReportsFlushErrors: when the statement fails, every caller of
// the batch gets the error, not a guess.
func TestCoalescerReportsFlushErrors(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	moveTo(t, l, "x", ledger.StatusInProgress)
	if _, err := db.Pool.Exec(context.Background(), `ALTER TABLE delegations RENAME TO delegations_gone`); err != nil {
		t.Fatal(err)
	}
	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxDelay: time.Millisecond}, nil)
	var wg sync.WaitGroup
	for _, id := range []string{"x", "y"} {
		wg.Go(func() {
			if live, err := c.Beat(context.Background(), id); err == nil || live {
				t.Errorf("%s: live=%v err=%v, want an error", id, live, err)
			}
		})
	}
	wg.Wait()
	if st := c.Stats(); st.Errors == 0 {
		t.Errorf("stats %+v: no flush error counted", st)
	}
}

// BenchmarkCoalescerBeat measures Beat from many goroutines (b.RunParallel
// with 64 goroutines per CPU) against 1000 live delegations.
func BenchmarkCoalescerBeat(b *testing.B) {
	db := testdb.New(b)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status)
		SELECT 'b-' || g, 'c', 'w', 'in_progress' FROM generate_series(0, 999) g`); err != nil {
		b.Fatal(err)
	}
	c := startCoalescer(b, ledger.New(db.Pool), ledger.CoalescerConfig{Flushers: 2}, nil)
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := c.Beat(ctx, fmt.Sprintf("b-%d", i%1000)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// startCoalescer returns a started Coalescer, stopped when tb ends; init,
// when set, runs before Start (to turn test signals on).
func startCoalescer(tb testing.TB, l *ledger.Ledger, cfg ledger.CoalescerConfig, init func(*ledger.Coalescer)) *ledger.Coalescer {
	tb.Helper()
	c, err := ledger.NewCoalescer(l, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if init != nil {
		init(c)
	}
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Stop)
	return c
}

// TestNewCoalescerRejectsBadConfig: bad input is an error naming the field,
// never a panic; a Coalescer not started refuses beats; Start twice is an
// error.
func TestNewCoalescerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	l := ledger.New(lazyPool(t))
	for name, tc := range map[string]struct {
		l    *ledger.Ledger
		cfg  ledger.CoalescerConfig
		want string
	}{
		"nil ledger":             {nil, ledger.CoalescerConfig{}, "ledger is nil"},
		"ledger of nothing":      {ledger.New(nil), ledger.CoalescerConfig{}, "ledger is nil"},
		"negative batch":         {l, ledger.CoalescerConfig{MaxBatch: -1}, "MaxBatch"},
		"negative delay":         {l, ledger.CoalescerConfig{MaxDelay: -time.Second}, "MaxDelay"},
		"negative flushers":      {l, ledger.CoalescerConfig{Flushers: -2}, "Flushers"},
		"negative flush timeout": {l, ledger.CoalescerConfig{FlushTimeout: -time.Second}, "FlushTimeout"},
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: NewCoalescer panicked: %v", name, r)
				}
			}()
			if _, err := ledger.NewCoalescer(tc.l, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: NewCoalescer = %v, want an error containing %q", name, err, tc.want)
			}
		}()
	}
	c, err := ledger.NewCoalescer(l, ledger.CoalescerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Beat(context.Background(), "x"); !errors.Is(err, ledger.ErrCoalescerStopped) {
		t.Fatalf("Beat before Start = %v, want ErrCoalescerStopped", err)
	}
	c.Stop() // never started: nothing to do
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := c.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
}

// lazyPool is a pool that never connects: for tests of constructors.
func lazyPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestCoalescerBeatForGuardsByCallee: BeatFor records a beat only on its
// callee's delegations, answers a live beat with the status, and keeps two
// beats of one id under different guards in different statements, each
// with its own answer: the other callee's beat writes nothing.
func TestCoalescerBeatForGuardsByCallee(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES
		('guard-a', 'billing', 'agent-a', 'in_progress', now() - interval '1 hour'),
		('guard-b', 'billing', 'agent-b', 'dispatched', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	// Each id comes under three guards (agent-a, none, agent-b), and a
	// statement holds an id under one guard: at least three statements.
	c := startCoalescer(t, l, ledger.CoalescerConfig{MaxBatch: 4, MaxDelay: 20 * time.Millisecond, Flushers: 2}, nil)
	type call struct{ callee, id string }
	calls := []call{
		{"agent-a", "guard-a"}, {"agent-a", "guard-b"}, {"", "guard-b"}, {"agent-b", "guard-b"},
		{"agent-b", "guard-a"}, {"", "guard-a"}, {"agent-a", "guard-a"}, {"agent-b", "guard-b"},
	}
	want := []ledger.HeartbeatResult{
		{Live: true, Status: ledger.StatusInProgress}, {}, {Live: true, Status: ledger.StatusDispatched},
		{Live: true, Status: ledger.StatusDispatched}, {}, {Live: true, Status: ledger.StatusInProgress},
		{Live: true, Status: ledger.StatusInProgress}, {Live: true, Status: ledger.StatusDispatched},
	}
	got := make([]ledger.HeartbeatResult, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, cl := range calls {
		wg.Go(func() { got[i], errs[i] = c.BeatFor(ctx, cl.callee, cl.id, nil) })
	}
	wg.Wait()
	for i := range calls {
		if errs[i] != nil || got[i] != want[i] {
			t.Errorf("BeatFor(%q, %q) = %+v, %v; want %+v", calls[i].callee, calls[i].id, got[i], errs[i], want[i])
		}
	}
	if st := c.Stats(); st.Beats != int64(len(calls)) || st.Errors != 0 || st.Flushes < 3 {
		t.Errorf("stats %+v: want %d beats in at least three statements, no errors", st, len(calls))
	}

	// Alone, a beat on another callee's row writes nothing.
	if _, err := pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	c2 := startCoalescer(t, l, ledger.CoalescerConfig{MaxBatch: 1, MaxDelay: time.Millisecond, Flushers: 1}, nil)
	if res, err := c2.BeatFor(ctx, "agent-b", "guard-a", json.RawMessage(`{"step": 9}`)); err != nil || res.Live {
		t.Fatalf("another callee's beat: %+v, %v", res, err)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id = 'guard-a'
		AND last_heartbeat < now() - interval '59 minutes' AND progress IS NULL`); n != 1 {
		t.Fatal("another callee's beat was recorded")
	}
	if _, err := c2.BeatFor(ctx, "bad id\x00", "guard-a", nil); err == nil {
		t.Fatal("an invalid callee id was accepted")
	}
}
