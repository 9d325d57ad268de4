package console

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/ledger"
)

// TestQueryPlans checks that every statement of queries.go reads an index,
// never scans delegations or delegation_events sequentially, and uses no
// OFFSET, both as planned for the given values and as a generic plan (what
// PostgreSQL may switch to after five runs of a prepared statement).
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	// History dominates, as in a real ledger: 60k rows, 3% in flight.
	if _, err := db.Pool.Exec(ctx, `
		SET session_replication_role = replica;
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, stuck_reason, last_heartbeat, created_at)
		SELECT 'd' || g, 'caller' || (g % 40), 'callee' || (g % 70),
		       CASE WHEN g % 100 = 0 THEN 'queued' WHEN g % 100 = 1 THEN 'dispatched' WHEN g % 100 = 2 THEN 'in_progress'
		            WHEN g % 100 < 80 THEN 'completed' WHEN g % 100 < 95 THEN 'failed' ELSE 'stuck' END,
		       CASE WHEN g % 100 >= 95 THEN 'heartbeat_timeout' END,
		       CASE WHEN g % 100 = 2 THEN now() END,
		       now() - make_interval(secs => g)
		FROM generate_series(1, 60000) g;
		INSERT INTO delegation_events (delegation_id, to_status, actor, at, caller_id, callee_id, reason)
		SELECT delegation_id, status, 'seed', created_at, caller_id, callee_id, stuck_reason FROM delegations;
		SET session_replication_role = DEFAULT;
		ANALYZE delegations; ANALYZE delegation_events`); err != nil {
		t.Fatal(err)
	}
	all := ledger.StatusStrings(ledger.Statuses)
	inflight := ledger.StatusStrings(ledger.NonTerminal())
	at, after := time.Now().Add(-time.Hour), time.Now().Add(-48*time.Hour)
	for _, c := range []struct {
		name  string
		sql   string
		args  []any
		index []string // one of these must appear
	}{
		{"in flight by caller", inFlightByCallerSQL, []any{"", ""}, []string{"idx_delegations_inflight"}},
		{"in flight of a caller", inFlightByCallerSQL, []any{"caller7", ""}, []string{"idx_delegations_inflight"}},
		{"in flight of a callee", inFlightByCallerSQL, []any{"", "callee7"}, []string{"idx_delegations_inflight"}},
		{"due", dueSQL, []any{"", ""}, []string{"idx_delegations_inflight_heartbeat"}},
		{"due of a caller", dueSQL, []any{"caller7", ""}, []string{"idx_delegations_inflight"}},
		{"events since", eventsSinceSQL, []any{at}, []string{"idx_delegation_events_feed"}},
		{"stuck since", stuckSinceSQL, []any{int64(0), at, "", ""}, []string{"idx_delegation_events_to_status"}},
		{"stuck since of a caller", stuckSinceSQL, []any{int64(0), at, "caller7", ""}, []string{"idx_delegation_events_to_status", "idx_delegation_events_caller"}},
		{"recent stuck", recentStuckSQL, []any{20, "", ""}, []string{"idx_delegation_events_to_status"}},
		{"list all", listByStatusesSQL, []any{all, at, "", minTime, 51}, []string{"idx_delegations_status"}},
		{"list in flight", listByStatusesSQL, []any{inflight, at, "", after, 51}, []string{"idx_delegations_status"}},
		{"list stuck", listByStatusesSQL, []any{[]string{"stuck"}, maxTime, "", minTime, 51}, []string{"idx_delegations_status"}},
		{"list caller", listByCallerSQL, []any{"caller7", all, "", maxTime, "", minTime, 51}, []string{"idx_delegations_caller"}},
		{"list caller in flight", listInFlightByCallerSQL, []any{"caller7", inflight, "callee3", maxTime, "", minTime, 51}, []string{"idx_delegations_inflight"}},
		{"list callee", listByCalleeSQL, []any{"callee7", all, maxTime, "", minTime, 51}, []string{"idx_delegations_callee"}},
		{"list id prefix", listByIDPrefixSQL, []any{"d12", "d12\U0010FFFF", "", all, "", "", minTime, maxTime, 51}, []string{"delegations_pkey"}},
	} {
		for _, mode := range []string{"custom", "generic"} {
			plan, err := explain(ctx, db.Pool, c.sql, c.args, mode)
			if err != nil {
				t.Fatalf("%s (%s): %v", c.name, mode, err)
			}
			if strings.Contains(plan, `"Seq Scan"`) || strings.Contains(c.sql, "OFFSET") {
				t.Errorf("%s (%s plan) scans sequentially:\n%s", c.name, mode, plan)
			}
			found := false
			for _, ix := range c.index {
				found = found || strings.Contains(plan, `"`+ix)
			}
			if !found {
				t.Errorf("%s (%s plan) reads none of %v:\n%s", c.name, mode, c.index, plan)
			}
		}
	}
}

var probes atomic.Int64

// explain returns the JSON plan of sql, planned for args (custom) or as a
// generic plan (PREPARE under plan_cache_mode = force_generic_plan).
func explain(ctx context.Context, pool *pgxpool.Pool, sql string, args []any, mode string) (string, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var raw []byte
	if mode == "custom" {
		if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
			return "", err
		}
		return string(raw), nil
	}
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
		return "", err
	}
	types := make([]string, len(args))
	lits := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			types[i], lits[i] = "text", "'"+strings.ReplaceAll(v, "'", "''")+"'"
		case []string:
			types[i], lits[i] = "text[]", "ARRAY['"+strings.Join(v, "','")+"']::text[]"
		case time.Time:
			types[i], lits[i] = "timestamptz", "'"+v.UTC().Format(time.RFC3339Nano)+"'"
		case int:
			types[i], lits[i] = "bigint", fmt.Sprint(v)
		case int64:
			types[i], lits[i] = "bigint", fmt.Sprint(v)
		default:
			return "", fmt.Errorf("explain: no literal for %T", a)
		}
	}
	// PREPARE outlives the transaction: each probe has a name of its own.
	name := fmt.Sprintf("plan_probe_%d", probes.Add(1))
	if _, err := tx.Exec(ctx, "PREPARE "+name+" ("+strings.Join(types, ", ")+") AS "+sql); err != nil {
		return "", err
	}
	if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE "+name+"("+strings.Join(lits, ", ")+")").Scan(&raw); err != nil {
		return "", err
	}
	if _, err := tx.Exec(ctx, "DEALLOCATE "+name); err != nil {
		return "", err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	return string(raw), nil
}
