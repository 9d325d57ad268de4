package sweep_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/sweep"
)

func newSweeper(t *testing.T, pool *pgxpool.Pool, cfg sweep.Config) *sweep.Sweeper {
	t.Helper()
	if cfg.NotifyChannel == "" {
		cfg.NotifyChannel = sweep.NotifyChannelDefault
	}
	s, err := sweep.New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func one[T any](t *testing.T, pool *pgxpool.Pool, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// seed inserts a row with raw SQL: status, heartbeat age and deadline offset
// relative to the database clock.
func seed(t *testing.T, pool *pgxpool.Pool, id string, st ledger.Status, heartbeatAge, deadlineIn time.Duration) {
	t.Helper()
	exec(t, pool, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, deadline)
		VALUES ($1, 'caller', 'callee', $2,
		        CASE WHEN $2 IN ('queued', 'dispatched') THEN NULL ELSE now() - make_interval(secs => $3) END,
		        now() + make_interval(secs => $4))`,
		id, st, heartbeatAge.Seconds(), deadlineIn.Seconds())
}

func statusOf(t *testing.T, pool *pgxpool.Pool, id string) (ledger.Status, string) {
	t.Helper()
	var st ledger.Status
	var reason *string
	if err := pool.QueryRow(context.Background(), `SELECT status, stuck_reason FROM delegations WHERE delegation_id = $1`, id).Scan(&st, &reason); err != nil {
		t.Fatal(err)
	}
	if reason == nil {
		return st, ""
	}
	return st, *reason
}

func TestRulesAndBoundaries(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	const hour = time.Hour
	rows := []struct {
		id           string
		status       ledger.Status
		hbAge        time.Duration
		deadlineIn   time.Duration
		wantStatus   ledger.Status
		wantReason   string
		whyUntouched string
	}{
		{"stale", ledger.StatusInProgress, 11 * time.Minute, hour, ledger.StatusStuck, sweep.ReasonHeartbeatTimeout, ""},
		{"just-under", ledger.StatusInProgress, 10*time.Minute - 5*time.Second, hour, ledger.StatusInProgress, "", "heartbeat 5s under the timeout"},
		{"fresh", ledger.StatusInProgress, time.Second, hour, ledger.StatusInProgress, "", "fresh heartbeat"},
		{"queued-late", ledger.StatusQueued, 0, -time.Second, ledger.StatusStuck, sweep.ReasonDeadlineExceeded, ""},
		{"dispatched-late", ledger.StatusDispatched, 0, -time.Minute, ledger.StatusStuck, sweep.ReasonDeadlineExceeded, ""},
		{"in-progress-late", ledger.StatusInProgress, time.Second, -time.Minute, ledger.StatusStuck, sweep.ReasonDeadlineExceeded, ""},
		{"both-rules", ledger.StatusInProgress, hour, -time.Minute, ledger.StatusStuck, sweep.ReasonDeadlineExceeded, ""},
		{"queued-old-on-time", ledger.StatusQueued, 0, hour, ledger.StatusQueued, "", "queued rows have no heartbeat rule"},
		{"dispatched-on-time", ledger.StatusDispatched, 0, time.Minute, ledger.StatusDispatched, "", "before its deadline"},
	}
	for _, r := range rows {
		seed(t, db.Pool, r.id, r.status, r.hbAge, r.deadlineIn)
	}
	// Terminal rows with stale heartbeats and past deadlines: never touched.
	for _, st := range []ledger.Status{ledger.StatusCompleted, ledger.StatusFailed, ledger.StatusStuck} {
		seed(t, db.Pool, "terminal-"+string(st), st, 2*hour, -hour)
	}
	terminalBefore := one[string](t, db.Pool, `SELECT string_agg(delegation_id || updated_at::text || status, ',' ORDER BY delegation_id) FROM delegations WHERE status IN ('completed','failed','stuck')`)

	s := newSweeper(t, db.Pool, sweep.Config{})
	res, err := s.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Swept != 5 || res.SweptHeartbeatTimeout != 1 || res.SweptDeadlineExceeded != 4 || res.Notified != 5 {
		t.Fatalf("result = %+v, want 5 swept (1 heartbeat, 4 deadline), 5 notified", res)
	}
	for _, r := range rows {
		st, reason := statusOf(t, db.Pool, r.id)
		if st != r.wantStatus || reason != r.wantReason {
			t.Errorf("%s: %s/%q, want %s/%q %s", r.id, st, reason, r.wantStatus, r.wantReason, r.whyUntouched)
		}
	}
	terminalAfter := one[string](t, db.Pool, `SELECT string_agg(delegation_id || updated_at::text || status, ',' ORDER BY delegation_id) FROM delegations WHERE status IN ('completed','failed','stuck') AND stuck_reason IS NULL`)
	if terminalAfter != terminalBefore {
		t.Fatalf("terminal rows changed:\n%s\n%s", terminalBefore, terminalAfter)
	}
	// Audit: one event per stuck row, actor sweeper, reason = stuck_reason.
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events e JOIN delegations d USING (delegation_id)
		WHERE e.to_status = 'stuck' AND e.actor = 'sweeper' AND e.reason = d.stuck_reason AND e.detail ? 'heartbeat_timeout_seconds'`); n != 5 {
		t.Fatalf("%d sweeper events, want 5", n)
	}
	if res.InFlight != 4 {
		t.Errorf("in flight after sweep = %d, want 4", res.InFlight)
	}
	if res.OldestHeartbeatAge < 9*time.Minute || res.OldestHeartbeatAge > 11*time.Minute {
		t.Errorf("oldest heartbeat age = %s, want about 10m", res.OldestHeartbeatAge)
	}
	// A second run finds nothing, in its probe: no batch.
	res, err = s.RunOnce(context.Background())
	if err != nil || res.Swept != 0 || res.Batches != 0 {
		t.Fatalf("second run = %+v, %v", res, err)
	}
}

// An in_progress row always has a heartbeat (entering in_progress sets it),
// so a worker that never heartbeated is judged from when it started.
func TestNeverHeartbeatedIsCaught(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "silent", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET status = 'in_progress', last_heartbeat = NULL WHERE delegation_id = 'silent'`); err != nil {
		t.Fatal(err)
	}
	if one[bool](t, db.Pool, `SELECT last_heartbeat IS NULL FROM delegations WHERE delegation_id = 'silent'`) {
		t.Fatal("in_progress row without a heartbeat")
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat) VALUES ('x','c','w','dispatched',NULL)`); err != nil {
		t.Fatal(err)
	}
	// A writer that clears the heartbeat of an in_progress row gets a fresh
	// one instead (the trigger), and with the trigger disabled the CHECK
	// refuses it: the heartbeat rule never meets a NULL.
	if _, err := db.Pool.Exec(ctx, `UPDATE delegations SET last_heartbeat = NULL WHERE delegation_id = 'silent'`); err != nil {
		t.Fatal(err)
	}
	if one[bool](t, db.Pool, `SELECT last_heartbeat IS NULL FROM delegations WHERE delegation_id = 'silent'`) {
		t.Fatal("an in_progress row lost its heartbeat")
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE delegations DISABLE TRIGGER delegations_touch`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE delegations SET last_heartbeat = NULL WHERE delegation_id = 'silent'`); err == nil {
		t.Fatal("the CHECK let an in_progress row lose its heartbeat")
	}
	_ = tx.Rollback(ctx)
	// Its start counts as its heartbeat: with a tiny timeout it is stale at once.
	s := newSweeper(t, db.Pool, sweep.Config{HeartbeatTimeout: time.Microsecond})
	res, err := s.RunOnce(ctx)
	if err != nil || res.SweptHeartbeatTimeout != 1 {
		t.Fatalf("res = %+v, %v", res, err)
	}
	if st, reason := statusOf(t, db.Pool, "silent"); st != ledger.StatusStuck || reason != sweep.ReasonHeartbeatTimeout {
		t.Fatalf("silent = %s/%s", st, reason)
	}
}

func TestDryRunCountsAndWritesNothing(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	for i := range 30 {
		seed(t, db.Pool, fmt.Sprintf("hb-%d", i), ledger.StatusInProgress, time.Hour, time.Hour)
	}
	for i := range 12 {
		seed(t, db.Pool, fmt.Sprintf("dl-%d", i), ledger.StatusQueued, 0, -time.Minute)
	}
	seed(t, db.Pool, "both", ledger.StatusInProgress, time.Hour, -time.Minute)
	seed(t, db.Pool, "live", ledger.StatusInProgress, 0, time.Hour)
	before := one[string](t, db.Pool, `SELECT md5(string_agg(d::text, ',' ORDER BY delegation_id)) FROM delegations d`)
	events := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events`)

	dry := newSweeper(t, db.Pool, sweep.Config{DryRun: true, BatchSize: 7})
	got, err := dry.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after := one[string](t, db.Pool, `SELECT md5(string_agg(d::text, ',' ORDER BY delegation_id)) FROM delegations d`); after != before {
		t.Fatal("dry run changed rows")
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events`); n != events {
		t.Fatal("dry run wrote events")
	}
	real := newSweeper(t, db.Pool, sweep.Config{BatchSize: 7})
	want, err := real.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !got.DryRun || got.Swept != want.Swept || got.SweptHeartbeatTimeout != want.SweptHeartbeatTimeout || got.SweptDeadlineExceeded != want.SweptDeadlineExceeded {
		t.Fatalf("dry run %+v differs from real run %+v", got, want)
	}
	// Deadline: 13 rows in batches of 7 and 6; heartbeat: 30 rows in 7,7,7,7,2;
	// own heartbeat timeouts: none eligible, so no batch (the run's probe
	// found nothing for it).
	if want.Swept != 43 || want.SweptDeadlineExceeded != 13 || want.Batches != 2+5 {
		t.Fatalf("real run = %+v, want 43 swept (13 deadline) in 7 batches", want)
	}
}

func TestMaxBatchesPerRunBoundsWork(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
		SELECT 'r' || g, 'c', 'w', 'in_progress', now() - interval '1 hour' FROM generate_series(1, 50) g`)
	s := newSweeper(t, db.Pool, sweep.Config{BatchSize: 10, MaxBatchesPerRun: 3})
	res, err := s.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// No deadline batch (the probe found none eligible), three heartbeat
	// batches of 10.
	if res.Swept != 30 || res.Batches != 3 || !res.More {
		t.Fatalf("first run = %+v, want 30 swept in 3 batches with more left", res)
	}
	for range 3 {
		if _, err := s.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`); n != 50 {
		t.Fatalf("%d stuck after four runs, want 50", n)
	}
}

// A heartbeat or completion that holds the row (not yet committed) when the
// sweep runs is skipped, and wins when it commits.
func TestWriterInFlightWins(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	seed(t, db.Pool, "beating", ledger.StatusInProgress, time.Hour, time.Hour)
	seed(t, db.Pool, "finishing", ledger.StatusInProgress, time.Hour, time.Hour)

	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ltx := ledger.New(conn).WithTx(tx)
	if hb, err := ltx.Heartbeat(ctx, "beating"); err != nil || !hb.Live {
		t.Fatal(hb, err)
	}
	if res, err := ltx.SetStatus(ctx, "finishing", ledger.StatusCompleted, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatal(res, err)
	}
	res, err := newSweeper(t, db.Pool, sweep.Config{}).RunOnce(ctx)
	if err != nil || res.Swept != 0 {
		t.Fatalf("sweep over locked rows = %+v, %v", res, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := statusOf(t, db.Pool, "beating"); st != ledger.StatusInProgress {
		t.Fatalf("beating = %s", st)
	}
	if st, _ := statusOf(t, db.Pool, "finishing"); st != ledger.StatusCompleted {
		t.Fatalf("finishing = %s", st)
	}
	// And the next sweep leaves them alone too.
	if res, err := newSweeper(t, db.Pool, sweep.Config{}).RunOnce(ctx); err != nil || res.Swept != 0 {
		t.Fatalf("next sweep = %+v, %v", res, err)
	}
}

// A completion committed before the sweep wins: the sweep leaves it alone.
func TestCompletionCommittedFirstWins(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	seed(t, db.Pool, "done", ledger.StatusInProgress, time.Hour, -time.Hour)
	if res, err := ledger.New(db.Pool).SetStatus(ctx, "done", ledger.StatusCompleted, ledger.Change{Result: "ok"}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatal(res, err)
	}
	if res, err := newSweeper(t, db.Pool, sweep.Config{}).RunOnce(ctx); err != nil || res.Swept != 0 {
		t.Fatalf("sweep = %+v, %v", res, err)
	}
	if n := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`); n != 0 {
		t.Fatalf("%d stuck events", n)
	}
}

// Heartbeats and completions race sweeps on rows that are just stale, many
// times over, so that every interleaving (including a heartbeat committed
// between the sweep's snapshot and its lock) is exercised. Whoever commits
// first wins, and each side learns the truth:
//   - a heartbeat that reported Live: the row is not stuck;
//   - a heartbeat that reported not live: the row is stuck;
//   - a completion applied: the row is completed; rejected: it is stuck.
func TestRaceHeartbeatAndCompletionAgainstSweep(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	l := ledger.New(db.Pool)
	const rounds, perRound = 40, 20
	for round := range rounds {
		ids := make([]string, perRound)
		for i := range ids {
			ids[i] = fmt.Sprintf("r%d-%d", round, i)
			seed(t, db.Pool, ids[i], ledger.StatusInProgress, time.Hour, time.Hour)
		}
		s := newSweeper(t, db.Pool, sweep.Config{BatchSize: 3})
		live := make([]bool, perRound)
		completed := make([]ledger.Outcome, perRound)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, id := range ids {
			wg.Go(func() {
				<-start
				if i%2 == 0 {
					hb, err := l.Heartbeat(ctx, id)
					if err != nil {
						t.Error(err)
					}
					live[i] = hb.Live
				} else {
					res, err := l.SetStatus(ctx, id, ledger.StatusCompleted, ledger.Change{})
					if err != nil {
						t.Error(err)
					}
					completed[i] = res.Outcome
				}
			})
		}
		for range 2 {
			wg.Go(func() {
				<-start
				if _, err := s.RunOnce(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		for i, id := range ids {
			st, _ := statusOf(t, db.Pool, id)
			if i%2 == 0 {
				if live[i] == (st == ledger.StatusStuck) {
					t.Fatalf("%s: heartbeat said live=%v, row is %s", id, live[i], st)
				}
			} else {
				want := map[ledger.Outcome]ledger.Status{
					ledger.OutcomeApplied:          ledger.StatusCompleted,
					ledger.OutcomeRejectedTerminal: ledger.StatusStuck,
				}[completed[i]]
				if st != want {
					t.Fatalf("%s: completion %s, row is %s", id, completed[i], st)
				}
			}
		}
	}
	// Exactly one terminal event per row, whoever won.
	if n := one[int](t, db.Pool, `SELECT count(*) FROM (SELECT delegation_id FROM delegation_events WHERE to_status IN ('stuck','completed') GROUP BY 1 HAVING count(*) <> 1) x`); n != 0 {
		t.Fatalf("%d rows with more than one terminal event", n)
	}
}

// Several sweepers at once: each row transitions once, with one event and one
// notification.
func TestConcurrentSweepersTransitionEachRowOnce(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	const n = 3000
	exec(t, db.Pool, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, deadline)
		SELECT 'r' || g, 'c', 'w', 'in_progress', now() - interval '1 hour',
		       now() + CASE WHEN g % 3 = 0 THEN interval '-1 minute' ELSE interval '1 hour' END
		FROM generate_series(1, $1) g`, n)

	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN `+sweep.NotifyChannelDefault); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	results := make([]sweep.Result, 4)
	for i := range results {
		wg.Go(func() {
			s := newSweeper(t, db.Pool, sweep.Config{BatchSize: 50, MaxBatchesPerRun: 1000})
			res, err := s.RunOnce(ctx)
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	total := 0
	for _, r := range results {
		total += r.Swept
	}
	if total != n {
		t.Fatalf("sweepers report %d swept in all, want %d (%+v)", total, n, results)
	}
	if got := one[int](t, db.Pool, `SELECT count(*) FROM delegations WHERE status = 'stuck'`); got != n {
		t.Fatalf("%d stuck rows, want %d", got, n)
	}
	if got := one[int](t, db.Pool, `SELECT count(*) FROM (SELECT 1 FROM delegation_events WHERE to_status = 'stuck' GROUP BY delegation_id HAVING count(*) = 1) x`); got != n {
		t.Fatalf("%d rows with exactly one stuck event, want %d", got, n)
	}
	if got := one[int](t, db.Pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'stuck'`); got != n {
		t.Fatalf("%d stuck events, want %d", got, n)
	}
	seen := map[string]int{}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(seen) < n {
		note, err := listener.WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("after %d notifications: %v", len(seen), err)
		}
		var p struct {
			DelegationID string `json:"delegation_id"`
			Reason       string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(note.Payload), &p); err != nil || p.Reason == "" {
			t.Fatalf("payload %q: %v", note.Payload, err)
		}
		seen[p.DelegationID]++
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s notified %d times", id, c)
		}
	}
	// Nothing more arrives.
	qctx, qcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer qcancel()
	if note, err := listener.WaitForNotification(qctx); err == nil {
		t.Fatalf("extra notification %q", note.Payload)
	}
}

func TestNotifyChannelEmptySendsNone(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	seed(t, db.Pool, "x", ledger.StatusQueued, 0, -time.Minute)
	s, err := sweep.New(db.Pool, sweep.Config{NotifyChannel: ""})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.RunOnce(context.Background())
	if err != nil || res.Swept != 1 || res.Notified != 0 {
		t.Fatalf("res = %+v, %v", res, err)
	}
}

// TestNewRejectsBadConfig: every bad Config is an error naming what is
// wrong, never a panic (robfig/cron panics on a bare time zone).
func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	pool := lazyPool(t)
	for name, tc := range map[string]struct {
		cfg  sweep.Config
		want string
	}{
		"bad schedule":        {sweep.Config{Schedule: "every now and then"}, "is not a valid cron spec"},
		"bare time zone":      {sweep.Config{Schedule: "CRON_TZ=UTC"}, "a time zone must be followed by a space"},
		"bare TZ":             {sweep.Config{Schedule: "TZ=Europe/Paris"}, "a time zone must be followed by a space"},
		"time zone, bad spec": {sweep.Config{Schedule: "CRON_TZ=UTC nope"}, "is not a valid cron spec"},
		"unknown time zone":   {sweep.Config{Schedule: "CRON_TZ=Nowhere/Land * * * * *"}, "is not a valid cron spec"},
		"blank schedule":      {sweep.Config{Schedule: "   "}, "is empty"},
		"sub-second @every":   {sweep.Config{Schedule: "@every 500ms"}, "whole seconds"},
		"negative timeout":    {sweep.Config{HeartbeatTimeout: -time.Second}, "heartbeat timeout"},
		"negative batch":      {sweep.Config{BatchSize: -1}, "batch size"},
		"negative max":        {sweep.Config{MaxBatchesPerRun: -1}, "max batches"},
		"negative batch tmo":  {sweep.Config{BatchTimeout: -time.Second}, "batch timeout"},
		"floor above ceiling": {sweep.Config{AdaptiveFloor: time.Minute, AdaptiveCeiling: time.Second}, "adaptive floor"},
		"negative floor":      {sweep.Config{AdaptiveFloor: -time.Second}, "adaptive floor"},
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: New panicked: %v", name, r)
				}
			}()
			_, err := sweep.New(pool, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: New = %v, want an error containing %q", name, err, tc.want)
			}
		}()
	}
	if _, err := sweep.New(nil, sweep.Config{}); err == nil || !strings.Contains(err.Error(), "pool is nil") {
		t.Errorf("nil pool: New = %v, want an error naming the pool", err)
	}
	s, err := sweep.New(pool, sweep.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config()
	if c.HeartbeatTimeout != 10*time.Minute || c.BatchSize != 1000 || c.MaxBatchesPerRun != 100 || c.Schedule != "@every 30s" {
		t.Fatalf("defaults = %+v", c)
	}
}

// TestValidateSchedule: what the config package and New accept and refuse.
func TestValidateSchedule(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{sweep.ScheduleDefault, sweep.ScheduleAdaptive, "*/5 * * * *", "@hourly",
		"CRON_TZ=Europe/Paris 0 3 * * *", "@every 1m30s"} {
		if err := sweep.ValidateSchedule(ok); err != nil {
			t.Errorf("ValidateSchedule(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "CRON_TZ=UTC", "TZ=", "@every 0s", "@every 1.5s", "* * *", "@adaptive "} {
		if err := sweep.ValidateSchedule(bad); err == nil {
			t.Errorf("ValidateSchedule(%q) = nil, want an error", bad)
		}
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
