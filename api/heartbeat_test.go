package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/ledger"
)

// Concurrent single heartbeats share one statement, and each request gets
// its own answer. The coalescer here flushes only when its batch holds all
// n beats (MaxBatch n, a MaxDelay longer than the test), so the n requests
// can only succeed together, in one HeartbeatMany: the stats then show one
// flush of n ids. Each live row answers live with its own status and has
// its heartbeat recorded; a terminal row answers not live without a beat; a
// row of another worker is not found, and is not beaten, though its beat
// went through the shared statement (guarded by the worker's callee).
func TestSingleHeartbeatsShareAStatement(t *testing.T) {
	t.Parallel()
	const n = 8
	var opts api.Options
	api.SetSingleBeats(&opts, ledger.CoalescerConfig{MaxBatch: n, MaxDelay: time.Hour, Flushers: 1})
	e := newEnv(t, opts)
	ctx := context.Background()
	statuses := map[string]ledger.Status{}
	for i := range n {
		id := fmt.Sprintf("beat-%d", i)
		st := ledger.StatusInProgress
		if i%2 == 1 {
			st = ledger.StatusDispatched
		}
		statuses[id] = st
		if _, err := e.db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status, last_heartbeat)
			VALUES ($1, 'billing', 'agent-a', $2, now() - interval '1 hour')`, id, st); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO delegations (delegation_id, caller_id, callee_id, status) VALUES
		('beat-done', 'billing', 'agent-a', 'completed'), ('beat-theirs', 'billing', 'agent-b', 'in_progress')`); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	answers := make([]resp, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = e.do("agent-a", "POST", fmt.Sprintf("/v1/delegations/beat-%d/heartbeat", i), nil)
		}()
	}
	wg.Wait()
	for i, r := range answers {
		id := fmt.Sprintf("beat-%d", i)
		if r.Code != 200 || r.json(t)["live"] != true || r.json(t)["status"] != string(statuses[id]) {
			t.Errorf("%s: %d %s", id, r.Code, r.Body)
		}
	}
	if s := api.SingleBeatStats(e.h); s.Flushes != 1 || s.IDs != n || s.Beats != n {
		t.Fatalf("coalescer stats %+v, want one flush of %d beats", s, n)
	}
	var fresh int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegations
		WHERE delegation_id ~ '^beat-[0-9]+$' AND last_heartbeat > now() - interval '1 minute'`).Scan(&fresh); err != nil || fresh != n {
		t.Fatalf("%d rows beaten (%v), want %d", fresh, err, n)
	}

	// A second batch of n: a terminal row, another worker's row and n-2
	// live ones. A worker's beats take the shared statement with its callee
	// as a guard, so the foreign row joins the batch but is not beaten; the
	// two rows that are not live are then answered from a read.
	var before, after time.Time
	if err := e.db.Pool.QueryRow(ctx, `SELECT last_heartbeat FROM delegations WHERE delegation_id = 'beat-theirs'`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	paths := []string{"beat-done", "beat-theirs"}
	for i := range n - 2 {
		paths = append(paths, fmt.Sprintf("beat-%d", i))
	}
	for i, id := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = e.do("agent-a", "POST", "/v1/delegations/"+id+"/heartbeat", nil)
		}()
	}
	wg.Wait()
	if r := answers[0]; r.Code != 200 || r.json(t)["live"] != false || r.json(t)["status"] != "completed" {
		t.Fatalf("terminal: %d %s", r.Code, r.Body)
	}
	if r := answers[1]; r.Code != 404 {
		t.Fatalf("another worker's row: %d %s", r.Code, r.Body)
	}
	for i, r := range answers[2:] {
		if r.Code != 200 || r.json(t)["live"] != true {
			t.Errorf("beat-%d in the second batch: %d %s", i, r.Code, r.Body)
		}
	}
	if s := api.SingleBeatStats(e.h); s.Flushes != 2 || s.IDs != 2*n {
		t.Fatalf("coalescer stats %+v, want two flushes of %d beats", s, n)
	}
	if err := e.db.Pool.QueryRow(ctx, `SELECT last_heartbeat FROM delegations WHERE delegation_id = 'beat-theirs'`).Scan(&after); err != nil || !after.Equal(before) {
		t.Fatalf("another worker's row was beaten: %s -> %s (%v)", before, after, err)
	}
	var done int
	if err := e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM delegations WHERE delegation_id = 'beat-done' AND last_heartbeat IS NOT NULL`).Scan(&done); err != nil || done != 0 {
		t.Fatalf("the terminal row was beaten (%d, %v)", done, err)
	}
}

// With the default token cache (1 s), a revoked token is refused within the
// cache's TTL: the requests after a real revoke turn 401 within a bound.
func TestRevokedTokenRefusedWithinTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	if r := e.do("reader", "GET", "/v1/summary", nil); r.Code != 200 {
		t.Fatalf("%d", r.Code)
	}
	if err := auth.NewStore(e.db.Pool).Revoke(context.Background(), "reader"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for {
		r := e.do("reader", "GET", "/v1/summary", nil)
		if r.Code == 401 {
			break
		}
		if r.Code != 200 {
			t.Fatalf("%d %s", r.Code, r.Body)
		}
		if time.Since(revoked) > auth.CacheTTLDefault+5*time.Second {
			t.Fatalf("the revoked token is still accepted %s after the revoke", time.Since(revoked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.do("reader", "GET", "/v1/summary", nil); r.Code != 401 {
		t.Fatalf("after refusal: %d", r.Code)
	}
}
