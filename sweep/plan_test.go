package sweep

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

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
	timeout := HeartbeatTimeoutDefault
	var out []statement
	for _, r := range rules {
		out = append(out,
			statement{"sweep by " + r.reason, r.sweep, r.args(timeout, batch, stuckSources, NotifyChannelDefault)},
			statement{"count by " + r.reason, r.count, r.args(timeout, batch*MaxBatchesPerRunDefault)})
	}
	return append(out,
		statement{"gauges", gaugesSQL, []any{timeout.Seconds()}},
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
// late. Triggers are off for the load: it is test data, not writes to audit.
func loadPlanLedger(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	stmts := []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat, deadline, created_at)
		SELECT 'd' || g, 'caller-' || (g %% 97), 'callee-' || (g %% 89),
		       CASE WHEN g %% 20 = 0 THEN 'in_progress'
		            WHEN g %% 20 = 1 THEN 'queued'
		            WHEN g %% 20 < 12 THEN 'completed'
		            WHEN g %% 20 < 17 THEN 'failed'
		            ELSE 'stuck' END,
		       CASE WHEN g %% 20 = 1 THEN NULL
		            WHEN g %% 2000 = 0 THEN now() - interval '1 hour'
		            ELSE now() - make_interval(secs => g %% 300) END,
		       CASE WHEN g %% 3001 = 1 THEN now() - interval '1 minute'
		            ELSE now() + interval '6 hours' END,
		       now() - make_interval(secs => g)
		FROM generate_series(1, %d) g`, n),
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

// explain returns the JSON plan of sql with args, without running it. In
// generic mode the statement is prepared and planned with
// plan_cache_mode = force_generic_plan, as PostgreSQL may do after five runs.
func explain(ctx context.Context, pool *pgxpool.Pool, sql string, args []any, mode string) (map[string]any, error) {
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
		if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
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
		q := "EXPLAIN (FORMAT JSON) EXECUTE plan_probe"
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
	return plans[0]["Plan"].(map[string]any), nil
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
