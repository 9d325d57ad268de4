package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasksweeper/sweeper/ledger"
)

// finish moves delegation id to the terminal status st (failed, stuck through
// raw SQL as the sweeper would, completed).
func finish(t *testing.T, l *ledger.Ledger, pool *pgxpool.Pool, id string, st ledger.Status) {
	t.Helper()
	ctx := context.Background()
	if st == ledger.StatusStuck {
		if _, err := pool.Exec(ctx, `UPDATE delegations SET status = 'stuck', stuck_reason = 'heartbeat_timeout' WHERE delegation_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return
	}
	if res, err := l.SetStatus(ctx, id, st, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatalf("move %s to %s: %+v, %v", id, st, res, err)
	}
}

func TestHeartbeatTimeoutSetAtInsertAndValidated(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "own", CallerID: "c", CalleeID: "w", HeartbeatTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "global", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	d, err := l.Get(ctx, "own")
	if err != nil || d.HeartbeatTimeout == nil || *d.HeartbeatTimeout != 30*time.Second || d.Attempt != 1 || d.RetryOf != "" {
		t.Fatalf("own = %+v, %v", d, err)
	}
	if d, err := l.Get(ctx, "global"); err != nil || d.HeartbeatTimeout != nil {
		t.Fatalf("global = %+v, %v", d, err)
	}
	// The sweep's index key is set from the heartbeat that entering
	// in_progress records (the expiry triggers run after the touch ones),
	// whether at insert or by a later move.
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "started", CallerID: "c", CalleeID: "w",
		Status: ledger.StatusInProgress, HeartbeatTimeout: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if res, err := l.SetStatus(ctx, "own", ledger.StatusInProgress, ledger.Change{}); err != nil || res.Outcome != ledger.OutcomeApplied {
		t.Fatalf("start own: %+v, %v", res, err)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id IN ('started', 'own')
		AND heartbeat_expires_at > last_heartbeat AND heartbeat_expires_at <= last_heartbeat + heartbeat_timeout`); n != 2 {
		t.Fatalf("%d of 2 started rows have their expiry set", n)
	}
	for i, bad := range []time.Duration{-time.Second, time.Millisecond, 999 * time.Millisecond, 7*24*time.Hour + time.Second} {
		_, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("bad-%d", i), CallerID: "c", CalleeID: "w", HeartbeatTimeout: bad})
		assertFieldError(t, err, "heartbeat_timeout")
	}
	for i, ok := range []time.Duration{time.Second, 7 * 24 * time.Hour} {
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("edge-%d", i), CallerID: "c", CalleeID: "w", HeartbeatTimeout: ok}); err != nil {
			t.Fatalf("%s: %v", ok, err)
		}
	}
	// Raw SQL: the CHECK holds the same bounds, and months are refused too.
	for _, bad := range []string{"0", "999 milliseconds", "7 days 1 second", "1 mon", "-1 minute"} {
		_, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, heartbeat_timeout) VALUES ('raw', 'c', 'w', $1::interval)`, bad)
		if err == nil || !errorsContain(err, "delegations_heartbeat_timeout_check") {
			t.Fatalf("raw heartbeat_timeout %q: %v", bad, err)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE delegation_id LIKE 'bad-%' OR delegation_id = 'raw'`); n != 0 {
		t.Fatalf("%d refused rows written", n)
	}
}

func errorsContain(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// An idempotency key is free for the next attempt after its latest attempt
// failed or got stuck, never while it is live or after it completed.
func TestIdempotencyKeyAcrossAttempts(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	ins := func(id string) ledger.InsertResult {
		t.Helper()
		res, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w", IdempotencyKey: "k", TaskPreview: "task " + id})
		if err != nil {
			t.Fatalf("insert %s: %v", id, err)
		}
		return res
	}
	if res := ins("a1"); res.Outcome != ledger.Inserted || res.Attempt != 1 || res.RetryOf != "" {
		t.Fatalf("first = %+v", res)
	}
	// Live: the key returns the live attempt.
	if res := ins("a2"); res.Outcome != ledger.DuplicateKey || res.DelegationID != "a1" {
		t.Fatalf("while live = %+v", res)
	}
	finish(t, l, pool, "a1", ledger.StatusFailed)
	// Failed: the next insert is attempt 2, retrying a1.
	if res := ins("a2"); res.Outcome != ledger.Retried || res.DelegationID != "a2" || res.Attempt != 2 || res.RetryOf != "a1" {
		t.Fatalf("after failed = %+v", res)
	}
	// Its replay, and another id, return attempt 2 while it is live.
	if res := ins("a2"); res.Outcome != ledger.DuplicateKey || res.DelegationID != "a2" {
		t.Fatalf("replay = %+v", res)
	}
	if res := ins("a3"); res.Outcome != ledger.DuplicateKey || res.DelegationID != "a2" {
		t.Fatalf("while attempt 2 live = %+v", res)
	}
	finish(t, l, pool, "a2", ledger.StatusStuck)
	// Stuck: attempt 3.
	if res := ins("a3"); res.Outcome != ledger.Retried || res.Attempt != 3 || res.RetryOf != "a2" {
		t.Fatalf("after stuck = %+v", res)
	}
	finish(t, l, pool, "a3", ledger.StatusCompleted)
	// Completed: the key is done; the completed attempt answers.
	if res := ins("a4"); res.Outcome != ledger.DuplicateKey || res.DelegationID != "a3" {
		t.Fatalf("after completed = %+v", res)
	}
	// Reusing a failed attempt's own id is that row, not a retry.
	if res := ins("a1"); res.Outcome != ledger.DuplicateKey || res.DelegationID != "a3" {
		t.Fatalf("old id = %+v", res)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE idempotency_key = 'k'`); n != 3 {
		t.Fatalf("%d rows under the key, want 3", n)
	}
	chain, err := l.Attempts(ctx, "a2")
	if err != nil || len(chain) != 3 {
		t.Fatalf("Attempts = %+v, %v", chain, err)
	}
	for i, want := range []struct {
		id, retryOf string
		st          ledger.Status
	}{{"a1", "", ledger.StatusFailed}, {"a2", "a1", ledger.StatusStuck}, {"a3", "a2", ledger.StatusCompleted}} {
		if d := chain[i]; d.DelegationID != want.id || d.Attempt != i+1 || d.RetryOf != want.retryOf || d.Status != want.st {
			t.Errorf("attempt %d = %s/%d/%q/%s, want %s/%d/%q/%s", i+1, d.DelegationID, d.Attempt, d.RetryOf, d.Status, want.id, i+1, want.retryOf, want.st)
		}
	}
	// The database holds the rule for raw SQL too: a second live attempt
	// under the key is refused, and a second attempt 3.
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, idempotency_key, attempt, retry_of)
		VALUES ('raw', 'c', 'w', 'k', 4, 'a3')`); !errorsContain(err, "idx_delegations_caller_idempotency_key") {
		t.Fatalf("second live-or-completed attempt under a key: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, idempotency_key, status, attempt, retry_of)
		VALUES ('raw', 'c', 'w', 'k', 'queued', 1, NULL)`); !errorsContain(err, "idx_delegations_") {
		t.Fatalf("attempt 1 again under a key: %v", err)
	}
}

// Concurrent inserts under one key whose latest attempt failed, over
// separate connections: exactly one next attempt; the rest get it back.
func TestConcurrentInsertsAfterFailureMakeOneAttempt(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "k1", CallerID: "c", CalleeID: "w", IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	finish(t, l, pool, "k1", ledger.StatusFailed)
	const n = 8
	results := make([]ledger.InsertResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("k2-%d", i), CallerID: "c", CalleeID: "w", IdempotencyKey: "k"})
		})
	}
	close(start)
	wg.Wait()
	retried := ""
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("insert %d: %v", i, errs[i])
		}
		if results[i].Outcome == ledger.Retried {
			if retried != "" {
				t.Fatalf("two next attempts: %s and %s", retried, results[i].DelegationID)
			}
			retried = results[i].DelegationID
		}
	}
	if retried == "" {
		t.Fatalf("no next attempt: %+v", results)
	}
	for i := range n {
		if results[i].DelegationID != retried {
			t.Errorf("insert %d = %+v, want %s", i, results[i], retried)
		}
	}
	if c := countRows(t, pool, `SELECT count(*) FROM delegations WHERE idempotency_key = 'k'`); c != 2 {
		t.Fatalf("%d rows under the key, want 2", c)
	}
}

func TestRetryOutcomes(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "task", CallerID: "c", CalleeID: "w",
		TaskPreview: "render", IdempotencyKey: "key", HeartbeatTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// Live, then completed elsewhere: not retryable.
	if res, err := l.Retry(ctx, "task", ledger.RetryOptions{}); err != nil || res.Outcome != ledger.RetryNotRetryable || res.Status != ledger.StatusQueued {
		t.Fatalf("retry of live = %+v, %v", res, err)
	}
	if res, err := l.Retry(ctx, "missing", ledger.RetryOptions{}); err != nil || res.Outcome != ledger.RetryNotFound {
		t.Fatalf("retry of missing = %+v, %v", res, err)
	}
	finish(t, l, pool, "task", ledger.StatusStuck)
	res, err := l.Retry(ctx, "task", ledger.RetryOptions{Actor: "ops", Reason: "worker restarted"})
	if err != nil || res.Outcome != ledger.RetryCreated || res.DelegationID != "task#2" || res.Attempt != 2 || res.Status != ledger.StatusStuck {
		t.Fatalf("retry = %+v, %v", res, err)
	}
	d, err := l.Get(ctx, "task#2")
	if err != nil || d.CallerID != "c" || d.CalleeID != "w" || d.TaskPreview != "render" || d.IdempotencyKey != "key" ||
		d.Attempt != 2 || d.RetryOf != "task" || d.Status != ledger.StatusQueued || d.HeartbeatTimeout == nil || *d.HeartbeatTimeout != 30*time.Second {
		t.Fatalf("next attempt = %+v, %v", d, err)
	}
	evs, err := l.Events(ctx, "task#2")
	if err != nil || len(evs) != 1 || evs[0].Actor != "ops" || evs[0].Reason != "worker restarted" {
		t.Fatalf("events of the next attempt = %+v, %v", evs, err)
	}
	// Again: it already has a next attempt.
	if res, err := l.Retry(ctx, "task", ledger.RetryOptions{}); err != nil || res.Outcome != ledger.RetryAlreadyRetried || res.DelegationID != "task#2" || res.Attempt != 2 {
		t.Fatalf("second retry = %+v, %v", res, err)
	}
	// Attempt 3 with overrides; the derived id drops the #2.
	finish(t, l, pool, "task#2", ledger.StatusFailed)
	res, err = l.Retry(ctx, "task#2", ledger.RetryOptions{CalleeID: "w2", TaskPreview: "render again", ClearIdempotencyKey: true, HeartbeatTimeout: time.Minute})
	if err != nil || res.DelegationID != "task#3" || res.Attempt != 3 {
		t.Fatalf("third = %+v, %v", res, err)
	}
	d, _ = l.Get(ctx, "task#3")
	if d.CalleeID != "w2" || d.TaskPreview != "render again" || d.IdempotencyKey != "" || *d.HeartbeatTimeout != time.Minute || d.RetryOf != "task#2" {
		t.Fatalf("overridden attempt = %+v", d)
	}
	// A given id that exists is a conflict; bad options are field errors.
	finish(t, l, pool, "task#3", ledger.StatusFailed)
	if _, err := l.Retry(ctx, "task#3", ledger.RetryOptions{DelegationID: "task"}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("retry into an existing id: %v", err)
	}
	_, err = l.Retry(ctx, "task#3", ledger.RetryOptions{HeartbeatTimeout: time.Millisecond})
	assertFieldError(t, err, "heartbeat_timeout")
	_, err = l.Retry(ctx, "task#3", ledger.RetryOptions{Status: ledger.StatusFailed})
	assertFieldError(t, err, "status")
	_, err = l.Retry(ctx, "", ledger.RetryOptions{})
	assertFieldError(t, err, "delegation_id")
	// Completed: not retryable.
	if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: "done", CallerID: "c", CalleeID: "w"}); err != nil {
		t.Fatal(err)
	}
	finish(t, l, pool, "done", ledger.StatusCompleted)
	if res, err := l.Retry(ctx, "done", ledger.RetryOptions{}); err != nil || res.Outcome != ledger.RetryNotRetryable || res.Status != ledger.StatusCompleted {
		t.Fatalf("retry of completed = %+v, %v", res, err)
	}
	chain, err := l.Attempts(ctx, "task#3")
	if err != nil || len(chain) != 3 || chain[0].DelegationID != "task" || chain[2].DelegationID != "task#3" {
		t.Fatalf("chain = %+v, %v", chain, err)
	}
	if chain, err := l.Attempts(ctx, "done"); err != nil || len(chain) != 1 {
		t.Fatalf("chain of one = %+v, %v", chain, err)
	}
	if _, err := l.Attempts(ctx, "missing"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Attempts of missing: %v", err)
	}
}

func TestNextAttemptID(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		id   string
		n    int
		want string
	}{
		{"task", 2, "task#2"},
		{"task#2", 3, "task#3"},
		{"order#12", 2, "order#12#2"},
		{"order#12#2", 3, "order#12#3"},
		{"x#5", 3, "x#5#3"},
	} {
		if got := ledger.NextAttemptID(c.id, c.n); got != c.want {
			t.Errorf("NextAttemptID(%q, %d) = %q, want %q", c.id, c.n, got, c.want)
		}
	}
}

// Two goroutines on two connections retry the same stuck delegation, many
// times over: each time exactly one next attempt is created and the other
// call gets it back as RetryAlreadyRetried.
func TestConcurrentRetriesCreateOneAttempt(t *testing.T) {
	t.Parallel()
	l, pool := newLedger(t)
	ctx := context.Background()
	for round := range 20 {
		id := fmt.Sprintf("r%d", round)
		if _, err := l.Insert(ctx, ledger.NewDelegation{DelegationID: id, CallerID: "c", CalleeID: "w", IdempotencyKey: id}); err != nil {
			t.Fatal(err)
		}
		finish(t, l, pool, id, ledger.StatusStuck)
		var results [2]ledger.RetryResult
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				conn, err := pool.Acquire(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				defer conn.Release()
				<-start
				// Each asks for its own id: only the chain decides the winner.
				results[i], errs[i] = ledger.New(conn).Retry(ctx, id, ledger.RetryOptions{DelegationID: fmt.Sprintf("%s-next-%d", id, i)})
			})
		}
		close(start)
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Fatalf("round %d retry %d: %v", round, i, errs[i])
			}
		}
		a, b := results[0], results[1]
		if a.Outcome == b.Outcome || a.DelegationID != b.DelegationID ||
			(a.Outcome != ledger.RetryCreated && a.Outcome != ledger.RetryAlreadyRetried) ||
			(b.Outcome != ledger.RetryCreated && b.Outcome != ledger.RetryAlreadyRetried) {
			t.Fatalf("round %d: %+v and %+v, want one created and one already retried, same id", round, a, b)
		}
		if n := countRows(t, pool, `SELECT count(*) FROM delegations WHERE retry_of = $1`, id); n != 1 {
			t.Fatalf("round %d: %d next attempts", round, n)
		}
	}
}
