package worker_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq" // database/sql driver "postgres"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
	"github.com/tasksweeper/sweeper/worker"
)

func TestMain(m *testing.M) { os.Exit(testdb.MainCheckingLeaks(m)) }

type fixture struct {
	t  *testing.T
	db *testdb.DB
	l  *ledger.Ledger
	w  *worker.Worker
}

// newFixture is a worker over a fresh ledger, beating every few
// milliseconds, with its test signals on.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	w, err := worker.New(l, worker.Config{HeartbeatInterval: 5 * time.Millisecond, Actor: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	w.TestSignals.Init(t)
	return &fixture{t: t, db: db, l: l, w: w}
}

func (f *fixture) insert(id string) {
	f.t.Helper()
	if _, err := f.l.Insert(context.Background(), ledger.NewDelegation{DelegationID: id, CallerID: "billing", CalleeID: "renderer", TaskPreview: "render " + id}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) get(id string) ledger.Delegation {
	f.t.Helper()
	d, err := f.l.Get(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// waitLiveBeat waits for a heartbeat of id that the ledger answered live.
func (f *fixture) waitLiveBeat(id string) {
	f.t.Helper()
	for {
		b := f.w.TestSignals.Beat.Wait()
		if b.DelegationID == id && b.Live && b.Err == nil {
			return
		}
	}
}

func TestRunCompletes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("ok")
	var before *time.Time
	err := f.w.Run(context.Background(), "ok", func(ctx context.Context, task *worker.Task) error {
		if task.ID() != "ok" || task.Delegation.Status != ledger.StatusInProgress || task.Delegation.TaskPreview != "render ok" {
			t.Errorf("task = %+v", task.Delegation)
		}
		before = f.get("ok").LastHeartbeat
		// Heartbeats run while the work does: two answered live.
		f.waitLiveBeat("ok")
		f.waitLiveBeat("ok")
		task.SetResult("invoice.pdf")
		return nil
	})
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	d := f.get("ok")
	if d.Status != ledger.StatusCompleted || d.ResultPreview != "invoice.pdf" {
		t.Fatalf("after Run: %+v", d)
	}
	if before == nil || d.LastHeartbeat == nil || !d.LastHeartbeat.After(*before) {
		t.Fatalf("heartbeats did not move last_heartbeat: %v -> %v", before, d.LastHeartbeat)
	}
	evs, err := f.l.Events(context.Background(), "ok")
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	for i, want := range []ledger.Status{ledger.StatusInProgress, ledger.StatusCompleted} {
		if ev := evs[i+1]; ev.ToStatus != want || ev.Actor != "worker-1" {
			t.Fatalf("event %d: %+v", i+1, ev)
		}
	}
}

func TestRunFailsWithTheErrorText(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("bad")
	boom := errors.New("renderer: font missing \x00 \xff")
	err := f.w.Run(context.Background(), "bad", func(context.Context, *worker.Task) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the work's error", err)
	}
	d := f.get("bad")
	if d.Status != ledger.StatusFailed || d.ErrorDetail != "renderer: font missing  \uFFFD" {
		t.Fatalf("after Run: %+v (%q)", d, d.ErrorDetail)
	}
}

func TestRunRecordsAPanicThenPanicsAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("panics")
	got := func() (p any) {
		defer func() { p = recover() }()
		_ = f.w.Run(context.Background(), "panics", func(context.Context, *worker.Task) error { panic("index out of range") })
		return nil
	}()
	if got != "index out of range" {
		t.Fatalf("recovered %v, want the work's panic", got)
	}
	if d := f.get("panics"); d.Status != ledger.StatusFailed || d.ErrorDetail != "panic: index out of range" {
		t.Fatalf("after the panic: %+v", d)
	}
}

// TestRunStopsWhenNotLive: the work's context is cancelled, with a cause
// that says why, at the first heartbeat after the delegation became
// terminal elsewhere; Run then records nothing and returns that cause.
func TestRunStopsWhenNotLive(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		end  func(f *fixture, id string)
		want ledger.Status
		text string
	}{
		"marked stuck by the sweeper": {
			end: func(f *fixture, id string) {
				ctx := context.Background()
				if _, err := f.db.Pool.Exec(ctx, `UPDATE delegations SET deadline = now() - interval '1 second' WHERE delegation_id = $1`, id); err != nil {
					f.t.Fatal(err)
				}
				s, err := sweep.New(f.db.Pool, sweep.Config{})
				if err != nil {
					f.t.Fatal(err)
				}
				// The sweep skips a row a heartbeat holds locked (SKIP
				// LOCKED) and takes it at a later run: run it until it does.
				for run := 0; ; run++ {
					res, err := s.RunOnce(ctx)
					if err != nil || run == 100 {
						f.t.Fatalf("sweep %d: %+v, %v", run, res, err)
					}
					if res.Swept == 1 {
						break
					}
				}
			},
			want: ledger.StatusStuck, text: "was marked stuck (deadline_exceeded)",
		},
		"failed by the caller": {
			end: func(f *fixture, id string) {
				if _, err := f.l.SetStatus(context.Background(), id, ledger.StatusFailed, ledger.Change{Actor: "billing", Error: "cancelled by user"}); err != nil {
					f.t.Fatal(err)
				}
			},
			want: ledger.StatusFailed, text: "was failed elsewhere",
		},
		"completed elsewhere": {
			end: func(f *fixture, id string) {
				if _, err := f.l.SetStatus(context.Background(), id, ledger.StatusCompleted, ledger.Change{Actor: "worker-2", Result: "theirs"}); err != nil {
					f.t.Fatal(err)
				}
			},
			want: ledger.StatusCompleted, text: "was completed elsewhere",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.insert("t")
			var cause error
			err := f.w.Run(context.Background(), "t", func(ctx context.Context, task *worker.Task) error {
				f.waitLiveBeat("t")
				tc.end(f, "t")
				select {
				case <-ctx.Done():
				case <-time.After(time.Minute):
					t.Error("the work's context was not cancelled within a minute")
				}
				cause = context.Cause(ctx)
				return ctx.Err()
			})
			var nle *worker.NotLiveError
			if !errors.As(cause, &nle) || nle.Status != tc.want || !strings.Contains(nle.Error(), tc.text) {
				t.Fatalf("cause = %v, want a NotLiveError %q", cause, tc.text)
			}
			if !errors.As(err, &nle) || !errors.Is(err, worker.ErrNotLive) || nle.Status != tc.want {
				t.Fatalf("Run = %v, want the NotLiveError", err)
			}
			d := f.get("t")
			if d.Status != tc.want || d.ErrorDetail == "context canceled" {
				t.Fatalf("row after Run: %+v", d)
			}
			evs, _ := f.l.Events(context.Background(), "t")
			if n := len(evs); n != 3 {
				t.Fatalf("%d events, want 3 (insert, start, the end from elsewhere): %+v", n, evs)
			}
		})
	}
}

// TestRunStoppedByShutdown: when the caller's context ends (a worker
// shutting down), the work sees it, and what it returns is recorded as
// failed with the reason.
func TestRunStoppedByShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("s")
	ctx, cancel := context.WithCancelCause(context.Background())
	shutdown := errors.New("SIGTERM")
	err := f.w.Run(ctx, "s", func(ctx context.Context, task *worker.Task) error {
		cancel(shutdown)
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if d := f.get("s"); d.Status != ledger.StatusFailed || d.ErrorDetail != "worker stopped before the work ended: SIGTERM" {
		t.Fatalf("after shutdown: %+v", d)
	}
}

func TestRunDoesNotStartWhatIsNotLive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("done")
	if _, err := f.l.SetStatus(context.Background(), "done", ledger.StatusCompleted, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	called := false
	fn := func(context.Context, *worker.Task) error { called = true; return nil }
	err := f.w.Run(context.Background(), "done", fn)
	var nle *worker.NotLiveError
	if !errors.As(err, &nle) || nle.Status != ledger.StatusCompleted || called {
		t.Fatalf("Run on a completed delegation = %v (called %v)", err, called)
	}
	if err := f.w.Run(context.Background(), "missing", fn); !errors.Is(err, ledger.ErrNotFound) || called {
		t.Fatalf("Run on a missing delegation = %v (called %v)", err, called)
	}
}

// TestRunWithASharedCoalescer: Workers sharing a started Coalescer, and the
// package-level Run.
func TestRunWithASharedCoalescer(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	l := ledger.New(db.Pool)
	c, err := ledger.NewCoalescer(l, ledger.CoalescerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	w, err := worker.New(l, worker.Config{Coalescer: c, HeartbeatInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.TestSignals.Init(t)
	for _, id := range []string{"a", "b"} {
		if _, err := l.Insert(context.Background(), ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2)
	for _, id := range []string{"a", "b"} {
		go func() {
			errs <- w.Run(context.Background(), id, func(ctx context.Context, task *worker.Task) error {
				task.SetResult("done " + task.ID())
				return nil
			})
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := worker.Run(context.Background(), l, "missing", func(context.Context, *worker.Task) error { return nil }); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("package Run on a missing delegation = %v", err)
	}
}

func TestIntervalIsAThirdOfTheTimeout(t *testing.T) {
	t.Parallel()
	if worker.GlobalHeartbeatTimeoutDefault != sweep.HeartbeatTimeoutDefault {
		t.Fatalf("GlobalHeartbeatTimeoutDefault %s, the sweeper's default %s", worker.GlobalHeartbeatTimeoutDefault, sweep.HeartbeatTimeoutDefault)
	}
	own := 90 * time.Second
	for name, tc := range map[string]struct {
		cfg  worker.Config
		d    ledger.Delegation
		want time.Duration
	}{
		"global default": {worker.Config{}, ledger.Delegation{}, sweep.HeartbeatTimeoutDefault / 3},
		"global set":     {worker.Config{GlobalHeartbeatTimeout: 30 * time.Second}, ledger.Delegation{}, 10 * time.Second},
		"own timeout":    {worker.Config{}, ledger.Delegation{HeartbeatTimeout: &own}, 30 * time.Second},
		"overridden":     {worker.Config{HeartbeatInterval: time.Second}, ledger.Delegation{HeartbeatTimeout: &own}, time.Second},
	} {
		w, err := worker.New(ledger.New(nil), tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := worker.Interval(w, tc.d); got != tc.want {
			t.Errorf("%s: interval %s, want %s", name, got, tc.want)
		}
	}
	for _, cfg := range []worker.Config{{HeartbeatInterval: -1}, {GlobalHeartbeatTimeout: -1}, {RecordTimeout: -1}} {
		if _, err := worker.New(ledger.New(nil), cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative value", cfg)
		}
	}
	if _, err := worker.New(nil, worker.Config{}); err == nil {
		t.Error("New(nil) accepted")
	}
}

// TestProgressGoesWithTheNextBeat: Task.Progress is recorded by the next
// heartbeat; a value that is not a JSON object is refused at once.
func TestProgressGoesWithTheNextBeat(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insert("p")
	err := f.w.Run(context.Background(), "p", func(ctx context.Context, task *worker.Task) error {
		if err := task.Progress([]int{1, 2}); err == nil {
			t.Error("Progress accepted a JSON array")
		}
		if err := task.Progress(map[string]int{"page": 3}); err != nil {
			return err
		}
		// Beats after the one that took the progress: it is recorded.
		f.waitLiveBeat("p")
		f.waitLiveBeat("p")
		d := f.get("p")
		if string(d.Progress) != `{"page": 3}` || d.ProgressAt == nil {
			t.Errorf("progress %s at %v", d.Progress, d.ProgressAt)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRunOverDatabaseSQL: the same Run on a ledger over database/sql
// (lib/pq): heartbeats (through a Coalescer on that ledger), progress and
// the outcome.
func TestRunOverDatabaseSQL(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	sqlDB, err := sql.Open("postgres", db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	l := ledger.NewSQL(sqlDB)
	w, err := worker.New(l, worker.Config{HeartbeatInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.TestSignals.Init(t)
	if _, err := l.Insert(context.Background(), ledger.NewDelegation{DelegationID: "sql", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	err = w.Run(context.Background(), "sql", func(ctx context.Context, task *worker.Task) error {
		if err := task.Progress(map[string]string{"at": "start"}); err != nil {
			return err
		}
		for n := 0; n < 2; {
			if b := w.TestSignals.Beat.Wait(); b.Live && b.Err == nil {
				n++
			}
		}
		task.SetResult("over lib/pq")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := ledger.New(db.Pool).Get(context.Background(), "sql")
	if err != nil || d.Status != ledger.StatusCompleted || d.ResultPreview != "over lib/pq" || string(d.Progress) != `{"at": "start"}` {
		t.Fatalf("after Run over lib/pq: %+v, %v", d, err)
	}
}
