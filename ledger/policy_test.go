package ledger_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// stuckRaw moves id to stuck with raw SQL, as another client (or the
// sweeper) would, bypassing the ledger package.
func stuckRaw(t *testing.T, pool *pgxpool.Pool, id string) {
	t.Helper()
	tag, err := pool.Exec(context.Background(),
		`UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = $1`, id)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("stuck %s: %v, %v", id, tag, err)
	}
}

// eventDetail is the detail of the one event of id to status to.
func eventDetail(t *testing.T, l *ledger.Ledger, id string, to ledger.Status) (ledger.Event, map[string]any) {
	t.Helper()
	evs, err := l.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var found []ledger.Event
	for _, e := range evs {
		if e.ToStatus == to {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s has %d events to %s: %+v", id, len(found), to, evs)
	}
	m := map[string]any{}
	if len(found[0].Detail) > 0 {
		if err := json.Unmarshal(found[0].Detail, &m); err != nil {
			t.Fatal(err)
		}
	}
	return found[0], m
}

// A row whose policy retries on stuck, moved to stuck by raw SQL: the
// database inserts the next attempt in the same transaction, a copy of the
// row (caller, callee, preview, key, timeouts, policy), due after the
// backoff ±10%; the stuck event names it, the queued event names what it
// retries; attempt n+1 waits twice as long; the last attempt is exhausted.
func TestPolicyRetriesStuckRowForAnyWriter(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	pol := ledger.RetryPolicy{MaxAttempts: 3, Backoff: 20 * time.Second, BackoffMax: 35 * time.Second}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "job", CallerID: "c", CalleeID: "w", TaskPreview: "resize",
		IdempotencyKey: "k1", HeartbeatTimeout: 45 * time.Second, Timeout: time.Hour, Status: ledger.StatusInProgress, Retry: pol}); err != nil {
		t.Fatal(err)
	}
	first, err := l.Get(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if first.MaxAttempts != 3 || first.RetryBackoff != 20*time.Second || first.RetryBackoffMax != 35*time.Second ||
		!slices.Equal(first.RetryOn, []ledger.Status{ledger.StatusStuck}) || first.NotBefore != nil || first.Exhausted {
		t.Fatalf("first attempt = %+v", first)
	}

	// Progress and the wait timeouts of version 7, set by raw SQL: the next
	// attempt inherits them (a worker resumes from the progress).
	if _, err := pool.Exec(ctx, `UPDATE delegations SET progress = '{"page": 7}', progress_timeout = '5 minutes',
		queue_timeout = '10 minutes', start_timeout = '1 minute' WHERE delegation_id = 'job'`); err != nil {
		t.Fatal(err)
	}
	var dbNow time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow); err != nil {
		t.Fatal(err)
	}
	stuckRaw(t, pool, "job")
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id = 'job#2' AND progress = '{"page": 7}'
		AND progress_timeout = '5 minutes' AND queue_timeout = '10 minutes' AND start_timeout = '1 minute'`); n != 1 {
		t.Fatal("the next attempt did not inherit the progress and the wait timeouts")
	}
	next, err := l.Get(ctx, "job#2")
	if err != nil {
		t.Fatalf("next attempt: %v", err)
	}
	if next.Status != ledger.StatusQueued || next.Attempt != 2 || next.RetryOf != "job" || next.CallerID != "c" || next.CalleeID != "w" ||
		next.TaskPreview != "resize" || next.IdempotencyKey != "k1" || next.HeartbeatTimeout == nil || *next.HeartbeatTimeout != 45*time.Second ||
		next.MaxAttempts != 3 || next.RetryBackoff != 20*time.Second || next.RetryBackoffMax != 35*time.Second || next.Exhausted {
		t.Fatalf("next attempt = %+v", next)
	}
	if next.NotBefore == nil {
		t.Fatal("next attempt has no not_before")
	}
	delay := next.NotBefore.Sub(dbNow)
	if delay < 18*time.Second || delay > 23*time.Second { // 20 s ±10%, plus the test's own time
		t.Fatalf("not_before is %s after the move, want 20 s ±10%%", delay)
	}
	// The deadline keeps the first attempt's span (1 h) from when it is due.
	if span := next.Deadline.Sub(*next.NotBefore); span < time.Hour-time.Second || span > time.Hour+time.Second {
		t.Fatalf("next deadline is %s after not_before, want 1 h", span)
	}
	stuckEv, stuckDetail := eventDetail(t, l, "job", ledger.StatusStuck)
	if stuckDetail["next_attempt"] != "job#2" || stuckDetail["not_before"] == nil || stuckDetail["exhausted"] != nil {
		t.Fatalf("stuck event detail = %v", stuckDetail)
	}
	queuedEv, queuedDetail := eventDetail(t, l, "job#2", ledger.StatusQueued)
	if queuedDetail["retry_of"] != "job" || queuedDetail["attempt"] != float64(2) || queuedDetail["not_before"] == nil ||
		queuedEv.Reason != "retry_policy" {
		t.Fatalf("queued event = %+v, detail %v", queuedEv, queuedDetail)
	}
	if queuedEv.ID <= stuckEv.ID {
		t.Fatalf("queued event %d comes before the stuck event %d it follows", queuedEv.ID, stuckEv.ID)
	}

	// Attempt 2 stuck: attempt 3 waits min(35 s, 20 s × 2) = 35 s ±10%.
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow); err != nil {
		t.Fatal(err)
	}
	stuckRaw(t, pool, "job#2")
	third, err := l.Get(ctx, "job#3")
	if err != nil || third.Attempt != 3 || third.RetryOf != "job#2" || third.NotBefore == nil {
		t.Fatalf("third attempt = %+v, %v", third, err)
	}
	if delay := third.NotBefore.Sub(dbNow); delay < 31*time.Second || delay > 39*time.Second {
		t.Fatalf("third not_before is %s after the move, want 35 s ±10%%", delay)
	}

	// Attempt 3 stuck: no attempt left.
	stuckRaw(t, pool, "job#3")
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != 3 {
		t.Fatalf("%d rows after the last attempt, want 3", n)
	}
	_, lastDetail := eventDetail(t, l, "job#3", ledger.StatusStuck)
	if lastDetail["exhausted"] != true || lastDetail["next_attempt"] != nil {
		t.Fatalf("last stuck event detail = %v", lastDetail)
	}
	last, err := l.Get(ctx, "job#3")
	if err != nil || !last.Exhausted {
		t.Fatalf("last attempt = %+v, %v", last, err)
	}
	page, err := l.List(ctx, ledger.ListFilter{Exhausted: true})
	if err != nil || len(page.Delegations) != 1 || page.Delegations[0].DelegationID != "job#3" {
		t.Fatalf("exhausted list = %+v, %v", page, err)
	}
	page, err = l.List(ctx, ledger.ListFilter{Exhausted: true, CallerID: "other"})
	if err != nil || len(page.Delegations) != 0 {
		t.Fatalf("exhausted list of another caller = %+v, %v", page, err)
	}
}

// The policy retries only the statuses of retry_on; the default policy
// retries nothing and calls nothing exhausted; failed retries when listed,
// through SetStatus too, which says so.
func TestPolicyRetryOn(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for _, d := range []ledger.NewDelegation{
		{DelegationID: "default"},
		{DelegationID: "stuck-only", Retry: ledger.RetryPolicy{MaxAttempts: 2}},
		{DelegationID: "both", Retry: ledger.RetryPolicy{MaxAttempts: 2, On: []ledger.Status{ledger.StatusFailed, ledger.StatusStuck}}},
		{DelegationID: "default-stuck"},
	} {
		d.CallerID, d.CalleeID = "c", "w"
		if _, err := l.Insert(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	res, err := l.SetStatus(ctx, "default", ledger.StatusFailed, ledger.Change{})
	if err != nil || res.Retried || res.Exhausted {
		t.Fatalf("default failed: %+v, %v", res, err)
	}
	stuckRaw(t, pool, "default-stuck")
	if _, d := eventDetail(t, l, "default-stuck", ledger.StatusStuck); d["exhausted"] != nil || d["next_attempt"] != nil {
		t.Fatalf("default policy's stuck event has retry detail %v", d)
	}
	res, err = l.SetStatus(ctx, "stuck-only", ledger.StatusFailed, ledger.Change{Detail: map[string]string{"why": "x"}})
	if err != nil || res.Retried || res.Exhausted {
		t.Fatalf("stuck-only failed: %+v, %v", res, err)
	}
	if _, d := eventDetail(t, l, "stuck-only", ledger.StatusFailed); d["why"] != "x" || len(d) != 1 {
		t.Fatalf("stuck-only failed event detail %v", d)
	}
	res, err = l.SetStatus(ctx, "both", ledger.StatusFailed, ledger.Change{Detail: map[string]string{"why": "y"}})
	if err != nil || !res.Retried || res.Exhausted {
		t.Fatalf("both failed: %+v, %v", res, err)
	}
	if _, d := eventDetail(t, l, "both", ledger.StatusFailed); d["why"] != "y" || d["next_attempt"] != "both#2" {
		t.Fatalf("both failed event detail %v", d)
	}
	res, err = l.SetStatus(ctx, "both#2", ledger.StatusFailed, ledger.Change{})
	if err != nil || res.Retried || !res.Exhausted {
		t.Fatalf("both#2 failed: %+v, %v", res, err)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != 5 {
		t.Fatalf("%d rows, want 5 (the four and both#2)", n)
	}
}

// Bad policies are refused by the ledger (a FieldError naming the field,
// nothing written) and by the database's CHECKs for raw SQL.
func TestPolicyValidated(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for i, c := range []struct {
		p     ledger.RetryPolicy
		field string
	}{
		{ledger.RetryPolicy{MaxAttempts: -1}, "retry.max_attempts"},
		{ledger.RetryPolicy{MaxAttempts: 101}, "retry.max_attempts"},
		{ledger.RetryPolicy{Backoff: time.Millisecond}, "retry.backoff"},
		{ledger.RetryPolicy{Backoff: 8 * 24 * time.Hour}, "retry.backoff"},
		{ledger.RetryPolicy{Backoff: time.Minute, BackoffMax: time.Second}, "retry.backoff_max"},
		{ledger.RetryPolicy{BackoffMax: 31 * 24 * time.Hour}, "retry.backoff_max"},
		{ledger.RetryPolicy{On: []ledger.Status{ledger.StatusCompleted}}, "retry.on"},
		{ledger.RetryPolicy{On: []ledger.Status{ledger.StatusStuck, ledger.StatusStuck}}, "retry.on"},
	} {
		_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("bad-%d", i), CallerID: "c", CalleeID: "w", Retry: c.p})
		assertFieldError(t, err, c.field)
	}
	for _, bad := range []string{
		`max_attempts = 0`, `max_attempts = 101`, `retry_backoff = '1 ms'`, `retry_backoff_max = '1 second'`,
		`retry_on = '{completed}'`, `retry_on = ARRAY[NULL]::text[]`, `retry_on = NULL`,
	} {
		_, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id) VALUES ('raw', 'c', 'w');
			UPDATE delegations SET `+bad+` WHERE delegation_id = 'raw'`)
		if err == nil {
			t.Fatalf("raw %s accepted", bad)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations`); n != 0 {
		t.Fatalf("%d rows written by refused inserts", n)
	}
	// A backoff at its largest does not overflow: 100 attempts, 7 days.
	p := ledger.RetryPolicy{MaxAttempts: 100, Backoff: 7 * 24 * time.Hour, BackoffMax: 30 * 24 * time.Hour}
	if got := p.BackoffAfter(99); got != 30*24*time.Hour {
		t.Fatalf("BackoffAfter(99) = %s", got)
	}
	if got := (ledger.RetryPolicy{}).BackoffAfter(3); got != 2*time.Minute {
		t.Fatalf("default BackoffAfter(3) = %s", got)
	}
}

// The next attempt's derived id may be taken (another delegation has it):
// the policy then names the attempt retry-<n>-<md5 of the id>, and still
// inserts it.
func TestPolicyNextIDTaken(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for _, d := range []ledger.NewDelegation{
		{DelegationID: "t", Retry: ledger.RetryPolicy{MaxAttempts: 2}, Status: ledger.StatusInProgress},
		{DelegationID: "t#2"},
	} {
		d.CallerID, d.CalleeID = "c", "w"
		if _, err := l.Insert(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	stuckRaw(t, pool, "t")
	chain, err := l.Attempts(ctx, "t")
	if err != nil || len(chain) != 2 || chain[1].RetryOf != "t" || chain[1].DelegationID != "retry-2-"+md5Hex("t") {
		t.Fatalf("chain = %+v, %v", chain, err)
	}
	if _, d := eventDetail(t, l, "t", ledger.StatusStuck); d["next_attempt"] != chain[1].DelegationID {
		t.Fatalf("stuck event detail %v", d)
	}
}

// Concurrent writers (the ledger's SetStatus to failed and stuck, raw SQL,
// manual Retry) on one live row: exactly one next attempt, by whichever
// moved the row first.
func TestPolicyOneNextAttemptUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	const rows = 20
	for i := range rows {
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("r%d", i), CallerID: "c", CalleeID: "w",
			Status: ledger.StatusInProgress, Retry: ledger.RetryPolicy{MaxAttempts: 5, On: []ledger.Status{ledger.StatusFailed, ledger.StatusStuck}}}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, rows*4)
	for i := range rows {
		id := fmt.Sprintf("r%d", i)
		wg.Add(4)
		go func() {
			defer wg.Done()
			if _, err := l.SetStatus(ctx, id, ledger.StatusFailed, ledger.Change{}); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := l.SetStatus(ctx, id, ledger.StatusStuck, ledger.Change{}); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			// The database guard refuses a second move of a terminal row.
			_, _ = pool.Exec(ctx, `UPDATE delegations SET status = 'stuck', stuck_reason = 'deadline_exceeded'
				WHERE delegation_id = $1 AND status = 'in_progress'`, id)
		}()
		go func() {
			defer wg.Done()
			if _, err := l.Retry(ctx, id, ledger.RetryOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE attempt = 2`); n != rows {
		t.Fatalf("%d next attempts for %d rows", n, rows)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations AS d WHERE attempt = 1
		AND (SELECT count(*) FROM delegation_events AS e WHERE e.delegation_id = d.delegation_id
		     AND e.to_status IN ('failed', 'stuck')) <> 1`); n != 0 {
		t.Fatalf("%d rows with other than one terminal event", n)
	}
}

// A manual Retry copies the policy and is due at once; a later stuck of the
// manual attempt continues the chain under the policy.
func TestManualRetryIsDueNowAndKeepsPolicy(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "m", CallerID: "c", CalleeID: "w",
		Retry: ledger.RetryPolicy{MaxAttempts: 3, Backoff: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SetStatus(ctx, "m", ledger.StatusFailed, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	res, err := l.Retry(ctx, "m", ledger.RetryOptions{})
	if err != nil || res.Outcome != ledger.RetryCreated {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	d, err := l.Get(ctx, res.DelegationID)
	if err != nil || d.NotBefore == nil || d.MaxAttempts != 3 || d.RetryBackoff != time.Minute {
		t.Fatalf("manual attempt = %+v, %v", d, err)
	}
	if late := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id = 'm#2' AND not_before > now()`); late != 0 {
		t.Fatal("manual attempt is not due now")
	}
	claimed, err := l.Claim(ctx, "w", 10)
	if err != nil || len(claimed) != 1 || claimed[0].DelegationID != "m#2" {
		t.Fatalf("claim = %+v, %v", claimed, err)
	}
	stuckRaw(t, pool, "m#2")
	if _, err := l.Get(ctx, "m#3"); err != nil {
		t.Fatalf("m#3: %v", err)
	}
}

// The database derives a next attempt's id as NextAttemptID does.
func TestNextAttemptIDMatchesTheDatabase(t *testing.T) {
	t.Parallel()
	_, pool := newLedger(t)
	for _, c := range []struct {
		id string
		n  int
	}{{"task", 1}, {"task#2", 2}, {"task#2", 3}, {"a#1", 1}, {"x#9", 9}, {"x#19", 9}, {"é#3", 3}} {
		var got string
		if err := pool.QueryRow(context.Background(), `SELECT sweeper_next_attempt_id($1, $2)`, c.id, c.n).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := ledger.NextAttemptID(c.id, c.n+1); got != want {
			t.Errorf("attempt after %d of %q: database %q, ledger %q", c.n, c.id, got, want)
		}
	}
	var null *string
	if err := pool.QueryRow(context.Background(), `SELECT sweeper_next_attempt_id(repeat('x', 254), 1)`).Scan(&null); err != nil || null != nil {
		t.Fatalf("too long: %v, %v", null, err)
	}
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
