package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/ledger"
)

// fail moves delegation id to failed through the ledger.
func (e *env) fail(id string) {
	e.t.Helper()
	if _, err := e.l.SetStatus(context.Background(), id, ledger.StatusFailed, ledger.Change{Error: "boom"}); err != nil {
		e.t.Fatal(err)
	}
}

func TestRetryEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	e.seed("r1", "billing", "agent-a", ledger.StatusInProgress)

	// Live, then completed: not retryable, with the current status.
	r := e.do("billing", "POST", "/v1/delegations/r1/retry", nil)
	if m := r.json(t); r.Code != 409 || m["outcome"] != "not_retryable" || m["current_status"] != "in_progress" || m["type"] != "urn:sweeper:problem:not-retryable" {
		t.Fatalf("live: %d %s", r.Code, r.Body)
	}
	e.seed("done", "billing", "agent-a", ledger.StatusInProgress)
	if _, err := e.l.SetStatus(context.Background(), "done", ledger.StatusCompleted, ledger.Change{}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("admin", "POST", "/v1/delegations/done/retry", nil); r.Code != 409 || r.json(t)["current_status"] != "completed" {
		t.Fatalf("completed: %d %s", r.Code, r.Body)
	}
	if r := e.do("admin", "POST", "/v1/delegations/missing/retry", nil); r.Code != 404 {
		t.Fatalf("missing: %d %s", r.Code, r.Body)
	}

	// Failed: an empty body derives the id and copies the rest.
	e.fail("r1")
	var rr api.RetryResponse
	r = e.do("billing", "POST", "/v1/delegations/r1/retry", nil)
	r.decode(t, &rr)
	if r.Code != 201 || rr != (api.RetryResponse{Outcome: "created", DelegationID: "r1#2", Attempt: 2}) || r.Header.Get("Location") != "/v1/delegations/r1%232" {
		t.Fatalf("retry: %d %v %s", r.Code, r.Header, r.Body)
	}
	var d api.Delegation
	e.do("billing", "GET", "/v1/delegations/r1%232", nil).decode(t, &d)
	if d.Attempt != 2 || d.RetryOf != "r1" || d.CalleeID != "agent-a" || d.TaskPreview != "task r1" || d.Status != ledger.StatusQueued {
		t.Fatalf("next attempt: %+v", d)
	}
	evs, err := e.l.Events(context.Background(), "r1#2")
	if err != nil || len(evs) != 1 || evs[0].Actor != "api:billing" {
		t.Fatalf("audit of the next attempt: %+v %v", evs, err)
	}

	// Again: already retried, naming the existing next attempt.
	rr = api.RetryResponse{}
	r = e.do("admin", "POST", "/v1/delegations/r1/retry", map[string]any{"delegation_id": "other"})
	r.decode(t, &rr)
	if r.Code != 200 || rr != (api.RetryResponse{Outcome: "already_retried", DelegationID: "r1#2", Attempt: 2}) {
		t.Fatalf("already retried: %d %s", r.Code, r.Body)
	}

	// A body overrides: id, callee, preview, heartbeat timeout, reason.
	e.fail("r1#2")
	r = e.do("billing", "POST", "/v1/delegations/r1%232/retry", map[string]any{
		"delegation_id": "r1-third", "callee_id": "agent-b", "task_preview": "again",
		"heartbeat_timeout_seconds": 30, "timeout_seconds": 60, "reason": "flaky",
	})
	if r.Code != 201 || r.json(t)["attempt"] != float64(3) || r.json(t)["delegation_id"] != "r1-third" {
		t.Fatalf("retry with body: %d %s", r.Code, r.Body)
	}
	e.do("admin", "GET", "/v1/delegations/r1-third", nil).decode(t, &d)
	if d.CalleeID != "agent-b" || d.TaskPreview != "again" || d.HeartbeatTimeoutSeconds == nil || *d.HeartbeatTimeoutSeconds != 30 {
		t.Fatalf("overrides: %+v", d)
	}

	// The chain, as the caller sees it and as agent-a (whose attempts are
	// the first two) sees it.
	var ar api.AttemptsResponse
	e.do("billing", "GET", "/v1/delegations/r1-third/attempts", nil).decode(t, &ar)
	var ids []string
	for _, a := range ar.Attempts {
		ids = append(ids, fmt.Sprintf("%s:%d", a.DelegationID, a.Attempt))
	}
	if fmt.Sprint(ids) != "[r1:1 r1#2:2 r1-third:3]" {
		t.Fatalf("chain: %v", ids)
	}
	ar = api.AttemptsResponse{}
	e.do("agent-a", "GET", "/v1/delegations/r1/attempts", nil).decode(t, &ar)
	if len(ar.Attempts) != 2 || ar.Attempts[1].DelegationID != "r1#2" {
		t.Fatalf("worker's chain: %+v", ar)
	}
	if r := e.do("agent-a", "GET", "/v1/delegations/r1-third/attempts", nil); r.Code != 404 {
		t.Fatalf("worker on another's attempt: %d", r.Code)
	}

	// Bad bodies name the field; unknown fields are refused.
	e.seed("r2", "billing", "agent-a", ledger.StatusInProgress)
	e.fail("r2")
	for _, c := range []struct {
		body  any
		code  int
		field string
	}{
		{map[string]any{"nope": 1}, 400, "nope"},
		{map[string]any{"heartbeat_timeout_seconds": 0.5}, 422, "heartbeat_timeout_seconds"},
		{map[string]any{"heartbeat_timeout_seconds": 7*24*3600 + 1}, 422, "heartbeat_timeout_seconds"},
		{map[string]any{"status": "completed"}, 422, "status"},
		{map[string]any{"deadline": "tomorrow"}, 422, "deadline"},
		{map[string]any{"delegation_id": "r1"}, 409, ""},
		{map[string]any{"idempotency_key": "k", "clear_idempotency_key": true}, 422, "idempotency_key"},
	} {
		r := e.do("billing", "POST", "/v1/delegations/r2/retry", c.body)
		if r.Code != c.code || (c.field != "" && r.json(t)["field"] != c.field) {
			t.Errorf("%v: %d %s, want %d naming %q", c.body, r.Code, r.Body, c.code, c.field)
		}
	}
	if r := e.do("billing", "POST", "/v1/delegations/r2/retry", []byte(`{}`)); r.Code != 201 {
		t.Fatalf("empty object: %d %s", r.Code, r.Body)
	}
}

// Two (here ten) concurrent retries of one delegation over HTTP: one next
// attempt; every answer names it.
func TestRetryRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	e.seed("race", "billing", "agent-a", ledger.StatusInProgress)
	e.fail("race")
	const n = 10
	var wg sync.WaitGroup
	codes := make([]int, n)
	got := make([]api.RetryResponse, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			tok := []string{"billing", "admin"}[i%2]
			r := e.do(tok, "POST", "/v1/delegations/race/retry", map[string]any{"delegation_id": fmt.Sprintf("race-%d", i)})
			codes[i] = r.Code
			r.decode(t, &got[i])
		})
	}
	close(start)
	wg.Wait()
	created := 0
	for i, c := range codes {
		switch {
		case c == 201 && got[i].Outcome == "created":
			created++
		case c == 200 && got[i].Outcome == "already_retried":
		default:
			t.Fatalf("retry %d: %d %+v", i, c, got[i])
		}
		if got[i].DelegationID != got[0].DelegationID || got[i].Attempt != 2 {
			t.Fatalf("retries disagree on the next attempt: %+v", got)
		}
	}
	var rows int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations WHERE retry_of = 'race'`).Scan(&rows); err != nil || rows != 1 || created != 1 {
		t.Fatalf("%d next attempts, %d created (%v)", rows, created, err)
	}
}

func TestInsertHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "h1", "callee_id": "agent-a", "heartbeat_timeout_seconds": 90})
	if r.Code != 201 {
		t.Fatalf("insert: %d %s", r.Code, r.Body)
	}
	got, err := e.l.Get(context.Background(), "h1")
	if err != nil || got.HeartbeatTimeout == nil || got.HeartbeatTimeout.Seconds() != 90 {
		t.Fatalf("stored: %+v %v", got, err)
	}
	m := e.do("billing", "GET", "/v1/delegations/h1", nil).json(t)
	if m["heartbeat_timeout_seconds"] != float64(90) {
		t.Fatalf("get: %v", m)
	}
	var page api.ListResponse
	e.do("billing", "GET", "/v1/delegations?caller_id=billing", nil).decode(t, &page)
	if len(page.Delegations) != 1 || page.Delegations[0].HeartbeatTimeoutSeconds == nil || *page.Delegations[0].HeartbeatTimeoutSeconds != 90 {
		t.Fatalf("list: %+v", page)
	}
	// Without one, the field is absent (the global timeout applies).
	e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "h2", "callee_id": "agent-a"})
	if m := e.do("billing", "GET", "/v1/delegations/h2", nil).json(t); m["heartbeat_timeout_seconds"] != nil {
		t.Fatalf("without one: %v", m)
	}
	for _, s := range []any{0, 0.999, 604801, -5, "60"} {
		r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "h3", "callee_id": "agent-a", "heartbeat_timeout_seconds": s})
		if want := map[bool]int{true: 400, false: 422}[s == "60"]; r.Code != want || r.json(t)["field"] != "heartbeat_timeout_seconds" {
			t.Errorf("heartbeat_timeout_seconds %v: %d %s", s, r.Code, r.Body)
		}
	}
	for _, s := range []float64{1, 604800} {
		id := fmt.Sprintf("edge-%g", s)
		if r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": id, "callee_id": "agent-a", "heartbeat_timeout_seconds": s}); r.Code != 201 {
			t.Errorf("heartbeat_timeout_seconds %g: %d %s", s, r.Code, r.Body)
		}
	}
}
