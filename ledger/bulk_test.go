package ledger_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/tasksweeper/sweeper/ledger"
)

// SetStatusMany moves the rows the lifecycle allows, in chunks, each with
// its audit event and its retry policy; RetryMany retries the failed and
// stuck rows that have no next attempt yet. Both leave the others alone and
// refuse more than MaxBulk ids.
func TestBulkWrites(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	const rows = 2500 // three chunks
	if _, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, max_attempts, retry_on)
		SELECT 'b' || g, 'c', 'w', CASE WHEN g % 10 = 0 THEN 'dispatched' ELSE 'in_progress' END,
		       CASE WHEN g % 5 = 0 THEN 3 ELSE 1 END, '{failed}'
		FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE delegations SET status = 'completed' WHERE delegation_id IN ('b1', 'b2')`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 1; i <= rows; i++ {
		ids = append(ids, fmt.Sprintf("b%d", i))
	}
	ids = append(ids, "missing", "b3") // a missing id and a duplicate
	res, err := l.SetStatusMany(ctx, ids, ledger.StatusFailed, ledger.Change{Actor: "console:ops", Reason: "drain", Error: "drained"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != rows-2 || res.Retried != rows/5 || res.Exhausted != 0 {
		t.Fatalf("SetStatusMany = %+v", res)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'failed' AND actor = 'console:ops' AND reason = 'drain'`); n != rows-2 {
		t.Fatalf("%d failed events", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE attempt = 2 AND not_before > now()`); n != rows/5 {
		t.Fatalf("%d next attempts scheduled by the policy", n)
	}
	// Again: nothing moves.
	if res, err := l.SetStatusMany(ctx, ids, ledger.StatusFailed, ledger.Change{}); err != nil || res.Applied != 0 {
		t.Fatalf("second SetStatusMany = %+v, %v", res, err)
	}

	// RetryMany: the failed rows without a next attempt (not those the
	// policy retried, not the completed ones, not the queued next attempts).
	all := append(ids, "b5#2")
	res, err = l.RetryMany(ctx, all, "console:ops", "retry all")
	if err != nil {
		t.Fatal(err)
	}
	if want := rows - 2 - rows/5; res.Applied != want {
		t.Fatalf("RetryMany = %+v, want %d", res, want)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events e JOIN delegations d USING (delegation_id)
		WHERE e.to_status = 'queued' AND e.actor = 'console:ops' AND e.reason = 'retry all' AND d.not_before <= now()`); n != res.Applied {
		t.Fatalf("%d queued events of the retries", n)
	}
	if res, err := l.RetryMany(ctx, all, "console:ops", ""); err != nil || res.Applied != 0 {
		t.Fatalf("second RetryMany = %+v, %v", res, err)
	}
	big := make([]string, ledger.MaxBulk+1)
	for i := range big {
		big[i] = fmt.Sprint(i)
	}
	_, err = l.SetStatusMany(ctx, big, ledger.StatusFailed, ledger.Change{})
	assertFieldError(t, err, "delegation_ids")
	_, err = l.RetryMany(ctx, []string{""}, "", "")
	assertFieldError(t, err, "delegation_ids[0]")
}
