package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/ledger"
)

// Claim takes only due queued rows of its callee, the longest due first
// (not_before, else created_at), moves them to dispatched with an audit
// event naming the claimer, and refuses bad arguments.
func TestClaimTakesDueRowsOldestFirst(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	// created_at and not_before set by raw SQL: a, b, c due in that order;
	// d not yet due; e another callee's; f dispatched already.
	if _, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, status, created_at, not_before) VALUES
		('a', 'c', 'w', 'queued', now() - interval '3 minutes', NULL),
		('b', 'c', 'w', 'queued', now() - interval '1 hour', now() - interval '2 minutes'),
		('c', 'c', 'w', 'queued', now() - interval '1 minute', NULL),
		('d', 'c', 'w', 'queued', now() - interval '1 hour', now() + interval '1 minute'),
		('e', 'c', 'other', 'queued', now() - interval '1 hour', NULL),
		('f', 'c', 'w', 'dispatched', now() - interval '1 hour', NULL)`); err != nil {
		t.Fatal(err)
	}
	got, err := l.ClaimBy(ctx, "pull-1", "w", 2)
	if err != nil {
		t.Fatal(err)
	}
	if ids := idsOf(got); ids != "a,b" {
		t.Fatalf("first claim = %s, want a,b", ids)
	}
	for _, d := range got {
		if d.Status != ledger.StatusDispatched {
			t.Fatalf("claimed %s is %s", d.DelegationID, d.Status)
		}
	}
	if got, err = l.Claim(ctx, "w", 10); err != nil || idsOf(got) != "c" {
		t.Fatalf("second claim = %s, %v; want c", idsOf(got), err)
	}
	if got, err = l.Claim(ctx, "w", 10); err != nil || len(got) != 0 {
		t.Fatalf("third claim = %s, %v; want none (d is not due)", idsOf(got), err)
	}
	evs, err := l.Events(ctx, "a")
	if err != nil || len(evs) != 2 || evs[1].ToStatus != ledger.StatusDispatched || evs[1].Actor != "pull-1" || evs[1].Reason != "claimed" {
		t.Fatalf("a's events = %+v, %v", evs, err)
	}
	// d becomes due.
	if _, err := pool.Exec(ctx, `UPDATE delegations SET not_before = now() - interval '1 second' WHERE delegation_id = 'd'`); err != nil {
		t.Fatal(err)
	}
	if got, err = l.Claim(ctx, "w", 10); err != nil || idsOf(got) != "d" {
		t.Fatalf("claim after d is due = %s, %v", idsOf(got), err)
	}
	for _, c := range []struct {
		callee string
		limit  int
		field  string
	}{{"", 1, "callee_id"}, {strings.Repeat("x", 256), 1, "callee_id"}, {"w", 0, "limit"}, {"w", ledger.MaxClaimLimit + 1, "limit"}} {
		_, err := l.Claim(ctx, c.callee, c.limit)
		assertFieldError(t, err, c.field)
	}
}

func idsOf(ds []ledger.Delegation) string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.DelegationID)
	}
	return strings.Join(ids, ",")
}

// Eight claimers at once over 2000 due rows: every row is claimed exactly
// once, none twice, and every claim's rows are in due order.
func TestConcurrentClaimersNeverShareARow(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	const rows, claimers = 2000, 8
	if _, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, created_at)
		SELECT 'q' || g, 'c', 'w', now() - make_interval(secs => g) FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, claimers)
	for c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				got, err := l.ClaimBy(ctx, fmt.Sprintf("claimer-%d", c), "w", 37)
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				for i := 1; i < len(got); i++ {
					if got[i].CreatedAt.Before(got[i-1].CreatedAt) {
						errs <- fmt.Errorf("claim out of order: %s before %s", got[i-1].DelegationID, got[i].DelegationID)
						return
					}
				}
				mu.Lock()
				for _, d := range got {
					seen[d.DelegationID]++
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != rows {
		t.Fatalf("claimed %d distinct rows of %d", len(seen), rows)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s claimed %d times", id, n)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE status <> 'dispatched'`); n != 0 {
		t.Fatalf("%d rows not dispatched", n)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events WHERE to_status = 'dispatched'`); n != rows {
		t.Fatalf("%d dispatched events for %d rows", n, rows)
	}
}

// A claim never returns a row before its not_before: rows due a moment
// apart are claimed one by one as the database clock passes them, polled
// with a bound, never slept for.
func TestClaimWaitsForNotBefore(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		INSERT INTO delegations (delegation_id, caller_id, callee_id, not_before)
		SELECT 'n' || g, 'c', 'w', clock_timestamp() + make_interval(secs => g * 0.05) FROM generate_series(1, 10) g`); err != nil {
		t.Fatal(err)
	}
	claimed := 0
	deadline := time.Now().Add(30 * time.Second)
	for claimed < 10 && time.Now().Before(deadline) {
		got, err := l.Claim(ctx, "w", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range got {
			if d.NotBefore == nil {
				t.Fatalf("claimed %s due at %v", d.DelegationID, d.NotBefore)
			}
		}
		claimed += len(got)
	}
	if claimed != 10 {
		t.Fatalf("claimed %d of 10", claimed)
	}
	// Every claim event is at or after its row's not_before, by the
	// database clock.
	if n := countRows(t, pool, `SELECT count(*) FROM delegation_events AS e JOIN delegations AS d USING (delegation_id)
		WHERE e.to_status = 'dispatched' AND e.at < d.not_before`); n != 0 {
		t.Fatalf("%d rows claimed before their not_before", n)
	}
}
