package ledger

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// planScans lists the scans of an EXPLAIN (FORMAT JSON) plan: "<node> on
// <table> using <index>".
func planScans(node map[string]any) []string {
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
		out = append(out, planScans(c.(map[string]any))...)
	}
	return out
}

// explainScans plans sql with args, as a custom plan or as the generic plan
// a prepared statement may switch to, without running it.
func explainScans(t *testing.T, pool *pgxpool.Pool, sql string, args []any, generic bool) []string {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if generic {
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			t.Fatal(err)
		}
	} else if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_custom_plan"); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var plans []map[string]any
	if err := json.Unmarshal(raw, &plans); err != nil {
		t.Fatal(err)
	}
	return planScans(plans[0]["Plan"].(map[string]any))
}

// The claim reads the partial index of queued rows, and the exhausted list
// its own: no sequential scan of a ledger of 200k rows, mostly history, as
// a custom or a generic plan, for a callee with many queued rows, few or
// none.
func TestClaimAndExhaustedPlansUseTheirIndexes(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		SET session_replication_role = replica;
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, created_at, not_before,
		                         max_attempts, attempt, retry_of)
		SELECT 'd' || g, 'caller-' || (g % 97), 'callee-' || (g % 89),
		       CASE WHEN g % 20 = 1 THEN 'queued' WHEN g % 20 < 12 THEN 'completed'
		            WHEN g % 20 < 17 THEN 'failed' ELSE 'stuck' END,
		       now() - make_interval(secs => g),
		       CASE WHEN g % 40 = 1 THEN now() + interval '1 minute' END,
		       CASE WHEN g % 100 = 19 THEN 3 ELSE 1 END,
		       CASE WHEN g % 100 = 19 THEN 3 ELSE 1 END,
		       CASE WHEN g % 100 = 19 THEN 'prev-' || g END
		FROM generate_series(1, 200000) g;
		SET session_replication_role = DEFAULT;
		ANALYZE delegations`); err != nil {
		t.Fatal(err)
	}
	far := "9999-12-31T00:00:00Z"
	// The claim finds its rows on the queued index and updates them by
	// primary key; the exhausted list reads either exhausted index (both
	// hold only exhausted rows).
	claim := []string{"idx_delegations_queued_callee", "delegations_pkey"}
	exhausted := []string{"idx_delegations_exhausted", "idx_delegations_exhausted_finished"}
	for _, c := range []struct {
		name, sql string
		indexes   []string
		args      []any
	}{
		{"claim", claimSQL, claim, []any{"callee-7", 100}},
		{"claim (callee without rows)", claimSQL, claim, []any{"nobody", 1000}},
		{"exhausted list", listExhaustedSQL, exhausted, []any{"", "", "", far, "", 51}},
		{"exhausted list of a caller", listExhaustedSQL, exhausted, []any{"caller-7", "", "", far, "", 51}},
	} {
		for _, generic := range []bool{false, true} {
			scans := explainScans(t, db.Pool, c.sql, c.args, generic)
			t.Logf("%s (generic %v): %s", c.name, generic, strings.Join(scans, ", "))
			for _, s := range scans {
				_, index, found := strings.Cut(s, " using ")
				if strings.HasPrefix(s, "Bitmap Heap Scan") {
					continue // its Bitmap Index Scan is checked
				}
				if strings.Contains(s, " on delegations") && (!found || !slices.Contains(c.indexes, index)) {
					t.Errorf("%s (generic %v) reads delegations other than through %v: %s", c.name, generic, c.indexes, s)
				}
			}
		}
	}
}
