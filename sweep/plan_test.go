package sweep

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// PlanRows is the ledger size of the plan test; SWEEPER_PLAN_ROWS overrides it
// (make bench runs it at 1M).
func planRows(t *testing.T) int {
	if v := os.Getenv("SWEEPER_PLAN_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			t.Fatalf("SWEEPER_PLAN_ROWS=%q: want a number of at least 1000", v)
		}
		return n
	}
	return 200_000
}

// statement is one SQL statement the sweep runs and its arguments.
type statement struct {
	name string
	sql  string
	args []any
}

// sweepStatements lists every statement the sweep (and `sweeper status`)
// runs, with the arguments they run with at this batch size.
func sweepStatements(batch int) []statement {
	// Every global rule on.
	cfg := Config{HeartbeatTimeout: HeartbeatTimeoutDefault, ProgressTimeout: 10 * time.Minute,
		QueueTimeout: 10 * time.Minute, StartTimeout: 2 * time.Minute, BatchSize: batch, NotifyChannel: NotifyChannelDefault}
	s := &Sweeper{cfg: cfg}
	var out []statement
	for _, r := range rules {
		out = append(out,
			statement{"sweep by " + r.name, r.sweep, r.sweepArgs(&cfg)},
			statement{"count by " + r.name, r.count, r.countArgs(&cfg, int64(batch*MaxBatchesPerRunDefault))},
			statement{"probe by " + r.name, r.count, r.countArgs(&cfg, 1)})
	}
	return append(out,
		statement{"gauges", gaugesSQL, s.gaugeArgs()},
		statement{"count in flight", countInFlightSQL, nil},
		statement{"oldest heartbeat", oldestHeartbeatSQL, nil})
}

// TestPlansUseIndexes: at 200k rows (SWEEPER_PLAN_ROWS), no statement the
// sweep runs reads delegations with a sequential scan, at batch sizes 1000
// and 10000, neither as a custom plan (first executions) nor as the generic
// plan PostgreSQL may switch a prepared statement to.
func TestPlansUseIndexes(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	n := planRows(t)
	if err := loadPlanLedger(ctx, db.Pool, n); err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{1000, 10000} {
		for _, st := range sweepStatements(batch) {
			name := st.name
			for _, mode := range []string{"custom", "generic"} {
				plan, err := explain(ctx, db.Pool, st.sql, st.args, mode)
				if err != nil {
					t.Fatalf("%s (batch %d, %s plan): %v", name, batch, mode, err)
				}
				scans := scansOf(plan)
				t.Logf("rows=%d batch=%d %-18s %-7s plan: %s", n, batch, name, mode, strings.Join(scans, ", "))
				for _, s := range scans {
					if strings.HasPrefix(s, "Seq Scan on delegations") {
						t.Errorf("%s (batch %d, %s plan) scans the whole table: %s", name, batch, mode, strings.Join(scans, ", "))
					}
				}
			}
		}
	}
}

// loadPlanLedger fills the delegations table with n rows shaped like a real
// ledger: most of it terminal history, 10% in flight, a few of those stale or
// late. The in_progress rows have mixed heartbeat timeouts: a third on the
// global one (NULL), a third 30 s (a quarter of them stale), a third 10 min.
// Triggers are off for the load: it is test data, not writes to audit.
func loadPlanLedger(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	stmts := []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat,
		                                      heartbeat_timeout, deadline, created_at)
		SELECT 'd' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89),
		       CASE WHEN g %% 20 = 0 THEN 'in_progress'
		            WHEN g %% 20 = 1 THEN 'queued'
		            WHEN g %% 20 = 2 THEN 'dispatched'
		            WHEN g %% 20 < 12 THEN 'completed'
		            WHEN g %% 20 < 17 THEN 'failed'
		            ELSE 'stuck' END,
		       CASE WHEN g %% 20 = 1 THEN NULL
		            WHEN g %% 2000 = 0 THEN now() - interval '1 hour'
		            WHEN g %% 60 = 20 THEN now() - make_interval(secs => g %% 40)
		            ELSE now() - make_interval(secs => g %% 300) END,
		       CASE WHEN g %% 60 = 20 THEN interval '30 seconds'
		            WHEN g %% 60 = 40 THEN interval '10 minutes' END,
		       CASE WHEN g %% 3001 = 1 THEN now() - interval '1 minute'
		            ELSE now() + interval '6 hours' END,
		       now() - make_interval(secs => g)
		FROM generate_series(1, %d) g`, n),
		setExpiresAtSQL,
		setProgressSQL,
		setWaitExpiriesSQL,
		`SET session_replication_role = DEFAULT`,
		`ANALYZE delegations`,
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("loading plan ledger: %w", err)
		}
	}
	return nil
}

// setExpiresAtSQL sets heartbeat_expires_at, which the triggers keep, on
// rows loaded with the triggers off.
const setExpiresAtSQL = `
UPDATE delegations SET heartbeat_expires_at = sweeper_heartbeat_expiry(last_heartbeat, heartbeat_timeout)
WHERE heartbeat_timeout IS NOT NULL`

// setProgressSQL gives rows loaded with the triggers off what the triggers
// of version 7 keep: in_progress rows' progress (up to 10 minutes old, a
// third of them with their own 5-minute progress timeout), dispatched rows'
// dispatched_at, and own queue and start timeouts on a third of the queued
// and dispatched rows.
const setProgressSQL = `
UPDATE delegations SET
    progress_at = CASE WHEN status = 'in_progress'
                       THEN last_heartbeat - make_interval(secs => substr(delegation_id, 2)::int % 600) END,
    progress_timeout = CASE WHEN status = 'in_progress' AND substr(delegation_id, 2)::int % 60 = 40
                            THEN interval '5 minutes' END,
    queue_timeout = CASE WHEN status = 'queued' AND substr(delegation_id, 2)::int % 3 = 0
                         THEN interval '10 minutes' END,
    start_timeout = CASE WHEN status = 'dispatched' AND substr(delegation_id, 2)::int % 3 = 0
                         THEN interval '10 minutes' END,
    dispatched_at = CASE WHEN status = 'dispatched' THEN created_at END
WHERE status IN ('queued', 'dispatched', 'in_progress')`

// setQuietProgressSQL is setProgressSQL with nothing eligible under the
// rules of sweepStatements: progress as fresh as the heartbeat, queued rows
// due now (not_before, as a retry's), dispatched rows dispatched under a
// minute ago; own timeouts as in setProgressSQL.
const setQuietProgressSQL = `
UPDATE delegations SET
    progress_at = CASE WHEN status = 'in_progress' THEN last_heartbeat END,
    progress_timeout = CASE WHEN status = 'in_progress' AND substr(delegation_id, 2)::int % 300 = 200
                            THEN interval '15 minutes' END,
    not_before = CASE WHEN status = 'queued' THEN now() END,
    queue_timeout = CASE WHEN status = 'queued' AND substr(delegation_id, 2)::int % 3 = 0
                         THEN interval '10 minutes' END,
    start_timeout = CASE WHEN status = 'dispatched' AND substr(delegation_id, 2)::int % 3 = 0
                         THEN interval '10 minutes' END,
    dispatched_at = CASE WHEN status = 'dispatched'
                         THEN now() - make_interval(secs => substr(delegation_id, 2)::int % 60) END
WHERE status IN ('queued', 'dispatched', 'in_progress')`

// setWaitExpiriesSQL sets the columns the rules' indexes hold from the above.
const setWaitExpiriesSQL = `
UPDATE delegations SET
    progress_minute = date_bin('1 minute', progress_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
    progress_expires_at = sweeper_heartbeat_expiry(progress_at, progress_timeout),
    queue_expires_at = sweeper_wait_expiry(COALESCE(not_before, created_at), queue_timeout),
    start_expires_at = sweeper_wait_expiry(dispatched_at, start_timeout)
WHERE status IN ('queued', 'dispatched', 'in_progress')`

// explain returns the JSON plan of sql with args, without running it. In
// generic mode the statement is prepared and planned with
// plan_cache_mode = force_generic_plan, as PostgreSQL may do after five runs.
func explain(ctx context.Context, pool *pgxpool.Pool, sql string, args []any, mode string) (map[string]any, error) {
	return explainWith(ctx, pool, "FORMAT JSON", sql, args, mode)
}

// explainWith is explain with EXPLAIN options opts ("ANALYZE, BUFFERS,
// FORMAT JSON" runs the statement, in a transaction rolled back after).
func explainWith(ctx context.Context, pool *pgxpool.Pool, opts, sql string, args []any, mode string) (map[string]any, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	var raw []byte
	if mode == "custom" {
		if err := tx.QueryRow(ctx, "EXPLAIN ("+opts+") "+sql, args...).Scan(&raw); err != nil {
			return nil, err
		}
	} else {
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, "PREPARE plan_probe AS "+sql); err != nil {
			return nil, err
		}
		// Render the arguments as literals for EXECUTE (they are ours, simple values).
		lits := make([]string, len(args))
		for i, a := range args {
			switch v := a.(type) {
			case string:
				lits[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			case []string:
				lits[i] = "ARRAY['" + strings.Join(v, "','") + "']"
			default:
				lits[i] = fmt.Sprint(v)
			}
		}
		q := "EXPLAIN (" + opts + ") EXECUTE plan_probe"
		if len(lits) > 0 {
			q += "(" + strings.Join(lits, ", ") + ")"
		}
		if err := tx.QueryRow(ctx, q).Scan(&raw); err != nil {
			return nil, err
		}
		// Prepared statements outlive the transaction.
		if _, err := tx.Exec(ctx, "DEALLOCATE plan_probe"); err != nil {
			return nil, err
		}
	}
	var plans []map[string]any
	if err := json.Unmarshal(raw, &plans); err != nil {
		return nil, err
	}
	plan := plans[0]["Plan"].(map[string]any)
	// With ANALYZE, the statement's execution time (ms) goes with its plan.
	if ms, ok := plans[0]["Execution Time"]; ok {
		plan["Execution Time"] = ms
	}
	return plan, nil
}

// scansOf lists every scan node of a plan: "Index Scan on delegations using idx (…)".
func scansOf(node map[string]any) []string {
	var out []string
	if typ, _ := node["Node Type"].(string); strings.Contains(typ, "Scan") {
		s := typ
		if rel, ok := node["Relation Name"].(string); ok {
			s += " on " + rel
		}
		if idx, ok := node["Index Name"].(string); ok {
			s += " using " + idx
		}
		out = append(out, s)
	}
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		out = append(out, scansOf(c.(map[string]any))...)
	}
	return out
}

// emptyClaimStatement is what a statement of the sweep may read when
// nothing is eligible.
type emptyClaimStatement struct {
	// indexes are the only indexes its plan may use (each scan of
	// delegations uses one of them).
	indexes []string
	// unbounded: the statement reads many in-flight rows by design (the
	// in-flight recount, run at most once a minute; the exact oldest
	// heartbeat of sweeper status), so only its indexes are checked.
	unbounded bool
	// buffers, when set, replaces emptyClaimBufferLimit.
	buffers int
}

// emptyClaimBufferLimit is the most buffers a sweep statement may touch
// when nothing is eligible, at any ledger size and any number of rows in
// flight: a few index pages.
const emptyClaimBufferLimit = 16

// TestEmptyClaimCostIsConstant: on a ledger with 1% of its rows in flight
// and nothing eligible (200k rows; SWEEPER_PLAN_ROWS=2000000 for the size of
// issue 9), every statement a sweep runs reads its rows only through the
// index meant for it (the claim's partial index, then the primary key of
// the claimed ids) and touches at most a few buffers, as a custom plan and
// as the generic plan of a prepared statement. Before the fix the heartbeat
// UPDATE's re-check was answered with a BitmapAnd over idx_delegations_status
// (every in_progress entry: 240 buffers at 2M rows), and the generic plan of
// its claim scanned the deadline index (20k buffers).
//
// The count statements keep their rule's conditions in a subquery fenced
// with OFFSET 0, the filters of the rules that come first (deadline >=
// now(), the heartbeat rule) outside it, so the planner cannot answer a
// probe through the deadline index. It did at 5M rows with 50k in flight
// and statistics taken before the in-flight rows reported progress (a large
// ledger's usual state: its in-flight rows' changes stay far below
// autovacuum's analyze threshold of 10% of the table): the probe of the
// stalled rule read all 50k rows, 43 ms a run. That flip needs tens of
// thousands of rows in flight over millions of history; make bench measures
// it (the nothing-eligible sweep at 5M with the rules on).
func TestEmptyClaimCostIsConstant(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	n := planRows(t)
	if err := loadQuietLedger(ctx, db.Pool, n); err != nil {
		t.Fatal(err)
	}
	const (
		deadlineIdx  = "idx_delegations_inflight_deadline"
		heartbeatIdx = "idx_delegations_inflight_heartbeat"
		ownIdx       = "idx_delegations_inflight_heartbeat_own"
		pkey         = "delegations_pkey"
		progressIdx  = "idx_delegations_inflight_progress"
		progressOwn  = "idx_delegations_inflight_progress_own"
		queuedIdx    = "idx_delegations_queued"
		queuedOwn    = "idx_delegations_queued_own"
		startIdx     = "idx_delegations_dispatched"
		startOwn     = "idx_delegations_dispatched_own"
	)
	allowed := map[string]emptyClaimStatement{
		"sweep by deadline":                 {indexes: []string{deadlineIdx, pkey}},
		"count by deadline":                 {indexes: []string{deadlineIdx}},
		"sweep by global heartbeat timeout": {indexes: []string{heartbeatIdx, pkey}},
		"count by global heartbeat timeout": {indexes: []string{heartbeatIdx}},
		"sweep by own heartbeat timeout":    {indexes: []string{ownIdx, pkey}},
		"count by own heartbeat timeout":    {indexes: []string{ownIdx}},
		"sweep by global progress timeout":  {indexes: []string{progressIdx, pkey}},
		"count by global progress timeout":  {indexes: []string{progressIdx}},
		"sweep by own progress timeout":     {indexes: []string{progressOwn, pkey}},
		"count by own progress timeout":     {indexes: []string{progressOwn}},
		"sweep by global start timeout":     {indexes: []string{startIdx, pkey}},
		"count by global start timeout":     {indexes: []string{startIdx}},
		"sweep by own start timeout":        {indexes: []string{startOwn, pkey}},
		"count by own start timeout":        {indexes: []string{startOwn}},
		"sweep by global queue timeout":     {indexes: []string{queuedIdx, pkey}},
		"count by global queue timeout":     {indexes: []string{queuedIdx}},
		"sweep by own queue timeout":        {indexes: []string{queuedOwn, pkey}},
		"count by own queue timeout":        {indexes: []string{queuedOwn}},
		// One probe of each rule's index; more buffers in all (two or so
		// per index), each probe bounded.
		"gauges": {indexes: []string{heartbeatIdx, ownIdx, deadlineIdx, progressIdx, progressOwn,
			queuedIdx, queuedOwn, startIdx, startOwn}, buffers: 3 * emptyClaimBufferLimit},
		// sweeper status, not a sweep: to be exact, it reads the rows of the
		// oldest minute.
		"oldest heartbeat": {indexes: []string{heartbeatIdx}, unbounded: true},
		"count in flight":  {indexes: []string{deadlineIdx, "idx_delegations_status"}, unbounded: true},
	}
	for _, st := range sweepStatements(BatchSizeDefault) {
		probe, isProbe := strings.CutPrefix(st.name, "probe by ")
		if isProbe {
			// The probe is the count statement limited to one row.
			st.name = "count by " + probe
		}
		want, ok := allowed[st.name]
		if !ok {
			t.Fatalf("statement %q has no expectation in this test", st.name)
		}
		for _, mode := range []string{"custom", "generic"} {
			// Twice: the first run sets hint bits on pages it visits.
			var plan map[string]any
			for range 2 {
				var err error
				if plan, err = explainWith(ctx, db.Pool, "ANALYZE, BUFFERS, FORMAT JSON", st.sql, st.args, mode); err != nil {
					t.Fatalf("%s (%s plan): %v", st.name, mode, err)
				}
			}
			scans := scansOf(plan)
			buffers := buffersOf(plan)
			ms, _ := plan["Execution Time"].(float64)
			t.Logf("rows=%d in_flight=1%% %-26s %-7s plan: %4d buffers, %.3f ms; %s", n, st.name, mode, buffers, ms, strings.Join(scans, ", "))
			for _, s := range scans {
				if strings.HasPrefix(s, "Seq Scan on delegations") || !usesOneOf(s, want.indexes) {
					t.Errorf("%s (%s plan) reads delegations through %q; want only %v", st.name, mode, s, want.indexes)
				}
			}
			if limit := cmp.Or(want.buffers, emptyClaimBufferLimit); !want.unbounded && buffers > limit {
				t.Errorf("%s (%s plan) touched %d buffers with nothing eligible; want at most %d", st.name, mode, buffers, limit)
			}
		}
	}
}

// usesOneOf reports whether the scan s, if it reads an index, reads one of
// indexes (a Bitmap Heap Scan is judged by the index scans under it, and a
// BitmapAnd of two indexes shows as two of them).
func usesOneOf(scan string, indexes []string) bool {
	if !strings.Contains(scan, " using ") {
		return true
	}
	for _, idx := range indexes {
		if strings.HasSuffix(scan, " using "+idx) {
			return true
		}
	}
	return false
}

// buffersOf is the number of shared buffers the statement touched (hit or
// read), from the top of an EXPLAIN (ANALYZE, BUFFERS) plan, whose counts
// include every node below.
func buffersOf(plan map[string]any) int {
	hit, _ := plan["Shared Hit Blocks"].(float64)
	read, _ := plan["Shared Read Blocks"].(float64)
	return int(hit + read)
}

// loadQuietLedger fills the delegations table with n rows of which 1% are
// in flight (in_progress with fresh heartbeats, and a few queued) and none
// is eligible: the ledger of a sweep that finds nothing. The in_progress
// rows have mixed heartbeat timeouts: a third on the global one (NULL), a
// third 15 min (heartbeats under a minute old), a third 1 hour. Like the
// global rows (under 5 min old, timeout 10 min), each stays more than two
// minutes from its expiry, where the gauges start reading rows to be exact,
// for the minutes the test takes at 1M rows. (Rows with a 30 s timeout and
// no heartbeats would be stale before the test ends;
// TestShortOwnTimeoutNotRead covers them.) The history's deadlines are six
// hours after it was created, so most have passed, as in a real ledger
// (the planner then thinks few rows meet deadline >= now()).
func loadQuietLedger(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	stmts := []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat,
		                                      heartbeat_timeout, deadline, created_at)
		SELECT 'q' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89),
		       CASE WHEN g %% 100 = 0 THEN 'in_progress'
		            WHEN g %% 1000 = 1 THEN 'queued'
		            WHEN g %% 1000 = 2 THEN 'dispatched'
		            WHEN g %% 20 < 12 THEN 'completed'
		            WHEN g %% 20 < 17 THEN 'failed'
		            ELSE 'stuck' END,
		       CASE WHEN g %% 1000 = 1 THEN NULL
		            WHEN g %% 300 = 0 THEN now() - make_interval(secs => g %% 60)
		            ELSE now() - make_interval(secs => g %% 300) END,
		       CASE WHEN g %% 300 = 0 THEN interval '15 minutes'
		            WHEN g %% 300 = 100 THEN interval '1 hour' END,
		       CASE WHEN g %% 100 = 0 OR g %% 1000 IN (1, 2)
		            THEN now() + interval '6 hours' + make_interval(secs => g %% 3600)
		            ELSE now() - make_interval(secs => g) + interval '6 hours' END,
		       now() - make_interval(secs => g)
		FROM generate_series(1, %d) g`, n),
		setExpiresAtSQL,
		setQuietProgressSQL,
		setWaitExpiriesSQL,
		`SET session_replication_role = DEFAULT`,
		`VACUUM ANALYZE delegations`,
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("loading quiet ledger: %w", err)
		}
	}
	return nil
}

// TestShortOwnTimeoutNotRead: rows with a 30 s timeout whose workers beat
// every 10 s are never read by a sweep that finds nothing: no row is read
// and then filtered out by the exact rule. Their expiry index holds
// heartbeats in bins of half the timeout (15 s), so a live row's indexed
// expiry is always ahead of now; with minute bins it would fall behind now
// for part of every minute, and each such row would be read and filtered.
// (Buffers are logged, not bounded: right after a bin boundary the index
// holds the entries the heartbeats left behind until a scan or vacuum
// removes them, as the global heartbeat index does once a minute.)
func TestShortOwnTimeoutNotRead(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	const rows = 20_000
	// The heartbeats of the last 10 s, spread over it, as live workers leave them.
	beat := `UPDATE delegations SET last_heartbeat = now() - make_interval(secs => substr(delegation_id, 2)::int % 10),
	         updated_at = now() WHERE status = 'in_progress'`
	for _, s := range []string{
		fmt.Sprintf(`INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, heartbeat_timeout)
		SELECT 's' || g, 'c', 'w', 'in_progress', now(), interval '30 seconds' FROM generate_series(1, %d) g`, rows),
		beat,
		`VACUUM ANALYZE delegations`,
	} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range sweepStatements(BatchSizeDefault) {
		if !strings.HasSuffix(st.name, "own heartbeat timeout") {
			continue
		}
		for _, mode := range []string{"custom", "generic"} {
			var plan map[string]any
			for range 2 {
				// The workers beat again (the oldest beat is under 10 s old).
				if _, err := db.Pool.Exec(ctx, beat); err != nil {
					t.Fatal(err)
				}
				var err error
				if plan, err = explainWith(ctx, db.Pool, "ANALYZE, BUFFERS, FORMAT JSON", st.sql, st.args, mode); err != nil {
					t.Fatalf("%s (%s plan): %v", st.name, mode, err)
				}
			}
			removed := removedByFilter(plan)
			t.Logf("rows=%d timeout=30s %-30s %-7s plan: %d rows read and filtered, %4d buffers; %s",
				rows, st.name, mode, removed, buffersOf(plan), strings.Join(scansOf(plan), ", "))
			if removed != 0 {
				t.Errorf("%s (%s plan) read and filtered out %d live rows", st.name, mode, removed)
			}
			if got, _ := plan["Actual Rows"].(float64); st.name == "sweep by own heartbeat timeout" && got != 1 {
				t.Errorf("%s (%s plan) returned %v rows, want the one count row", st.name, mode, got)
			}
		}
	}
}

// removedByFilter is the number of rows every node of an EXPLAIN ANALYZE
// plan read and then dropped by a filter.
func removedByFilter(node map[string]any) int {
	n, _ := node["Rows Removed by Filter"].(float64)
	total := int(n)
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		total += removedByFilter(c.(map[string]any))
	}
	return total
}

// TestProbesRunGenericPlans: a run's probe batch runs the prepared
// statements' generic plans (genericPlansSQL), with every rule on and with
// the new rules off (NULL arguments, for which PostgreSQL's auto mode kept
// choosing custom plans and planned the gauges again on every run), and the
// setting ends with the batch: the connection is back to auto after it.
func TestProbesRunGenericPlans(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	if err := loadQuietLedger(ctx, db.Pool, 20_000); err != nil {
		t.Fatal(err)
	}
	for _, rulesOn := range []bool{false, true} {
		cfg, err := pgxpool.ParseConfig(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 1 // every run and the checks below on one session
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		sc := Config{HeartbeatTimeout: HeartbeatTimeoutDefault, NotifyChannel: NotifyChannelDefault}
		if rulesOn {
			sc.ProgressTimeout, sc.QueueTimeout, sc.StartTimeout = 10*time.Minute, time.Hour, 10*time.Minute
		}
		s, err := New(pool, sc)
		if err != nil {
			t.Fatal(err)
		}
		const runs = 8
		for range runs {
			res, err := s.RunOnce(ctx)
			if err != nil || res.Swept != 0 {
				t.Fatalf("rules on %v: run swept %d (%v), want a nothing-eligible run", rulesOn, res.Swept, err)
			}
		}
		var mode string
		if err := pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != "auto" {
			t.Fatalf("rules on %v: plan_cache_mode after a run is %q (%v), want auto", rulesOn, mode, err)
		}
		rows, err := pool.Query(ctx, `SELECT left(regexp_replace(statement, '\s+', ' ', 'g'), 60), generic_plans, custom_plans
			FROM pg_prepared_statements WHERE generic_plans + custom_plans >= $1 AND statement LIKE '%delegations%'`, runs)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var stmt string
			var generic, custom int64
			if err := rows.Scan(&stmt, &generic, &custom); err != nil {
				t.Fatal(err)
			}
			n++
			t.Logf("rules on %v: %s…: %d generic, %d custom", rulesOn, stmt, generic, custom)
			if custom != 0 || generic != runs {
				t.Errorf("rules on %v: %s…: %d generic and %d custom plans in %d runs; want only generic ones", rulesOn, stmt, generic, custom, runs)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		// The probes of the rules that are on (those of the delegations' own
		// timeouts always are) and the gauges.
		if want := map[bool]int{false: 7, true: 10}[rulesOn]; n != want {
			t.Errorf("rules on %v: %d statements ran in every run, want %d (the probes and the gauges)", rulesOn, n, want)
		}
		pool.Close()
	}
}
