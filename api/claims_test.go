package api_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/ledger"
)

// counters gathers the env's counters, summed over their labels, by name
// and "name{label=value}".
func (e *env) counters() map[string]float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			c := m.GetCounter()
			if c == nil {
				continue
			}
			got[mf.GetName()] += c.GetValue()
			for _, lp := range m.GetLabel() {
				got[fmt.Sprintf("%s{%s=%s}", mf.GetName(), lp.GetName(), lp.GetValue())] += c.GetValue()
			}
		}
	}
	return got
}

// POST /v1/claims: a worker claims due rows of its own callee (the default),
// never another's; an admin claims for any callee it names; callers and
// readers may not claim; bad limits are 422s naming the field.
func TestClaimEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	for i := range 5 {
		e.seed(fmt.Sprintf("a%d", i), "billing", "agent-a", ledger.StatusQueued)
	}
	e.seed("b0", "billing", "agent-b", ledger.StatusQueued)
	e.seed("a-started", "billing", "agent-a", ledger.StatusInProgress)

	var cr api.ClaimResponse
	r := e.do("agent-a", "POST", "/v1/claims", map[string]any{"limit": 3})
	r.decode(t, &cr)
	if r.Code != 200 || len(cr.Delegations) != 3 {
		t.Fatalf("worker claim: %d %s", r.Code, r.Body)
	}
	for _, d := range cr.Delegations {
		if d.CalleeID != "agent-a" || d.Status != ledger.StatusDispatched || d.Retry.MaxAttempts != 1 {
			t.Fatalf("claimed %+v", d)
		}
	}
	evs, err := e.l.Events(context.Background(), cr.Delegations[0].DelegationID)
	if err != nil || evs[len(evs)-1].Actor != "api:agent-a" || evs[len(evs)-1].ToStatus != ledger.StatusDispatched {
		t.Fatalf("claim audit: %+v %v", evs, err)
	}
	for _, c := range []struct {
		token string
		body  map[string]any
		code  int
		field string
	}{
		{"agent-a", map[string]any{"callee_id": "agent-b", "limit": 10}, 403, ""},
		{"billing", map[string]any{"callee_id": "agent-a", "limit": 10}, 403, ""},
		{"reader", map[string]any{"callee_id": "agent-a", "limit": 10}, 403, ""},
		{"admin", map[string]any{"limit": 10}, 422, "callee_id"},
		// Present, callee_id is an identifier: empty is not absent, and it
		// is judged before whose it is.
		{"agent-a", map[string]any{"callee_id": "", "limit": 10}, 422, "callee_id"},
		{"admin", map[string]any{"callee_id": "", "limit": 10}, 422, "callee_id"},
		{"agent-a", map[string]any{"callee_id": strings.Repeat("a", 256), "limit": 10}, 422, "callee_id"},
		{"agent-a", map[string]any{"callee_id": "agent\x01a", "limit": 10}, 422, "callee_id"},
		{"agent-a", map[string]any{"limit": 0}, 422, "limit"},
		{"agent-a", map[string]any{"limit": ledger.MaxClaimLimit + 1}, 422, "limit"},
		{"agent-a", map[string]any{"limit": 1, "extra": true}, 400, ""},
	} {
		r := e.do(c.token, "POST", "/v1/claims", c.body)
		if r.Code != c.code {
			t.Fatalf("%s %v: %d %s", c.token, c.body, r.Code, r.Body)
		}
		if c.field != "" && fmt.Sprint(r.json(t)["field"]) != c.field && !containsField(r.json(t), c.field) {
			t.Fatalf("%s %v: %s does not name %s", c.token, c.body, r.Body, c.field)
		}
	}
	if r := e.do("", "POST", "/v1/claims", map[string]any{"limit": 1}); r.Code != 401 {
		t.Fatalf("anonymous claim: %d", r.Code)
	}
	// The admin claims the rest of agent-a's queue and agent-b's row.
	cr = api.ClaimResponse{}
	e.do("admin", "POST", "/v1/claims", map[string]any{"callee_id": "agent-a", "limit": 100}).decode(t, &cr)
	if len(cr.Delegations) != 2 {
		t.Fatalf("admin claim of agent-a: %+v", cr)
	}
	cr = api.ClaimResponse{}
	e.do("admin", "POST", "/v1/claims", map[string]any{"callee_id": "agent-b", "limit": 100}).decode(t, &cr)
	if len(cr.Delegations) != 1 || cr.Delegations[0].DelegationID != "b0" {
		t.Fatalf("admin claim of agent-b: %+v", cr)
	}
	// Nothing left: an empty list, not null.
	r = e.do("agent-a", "POST", "/v1/claims", map[string]any{"limit": 10})
	if r.Code != 200 || string(r.Body) != "{\"delegations\":[]}\n" {
		t.Fatalf("empty claim: %d %q", r.Code, r.Body)
	}
	if got := e.counters()["sweeper_api_claimed_total"]; got != 6 {
		t.Fatalf("sweeper_api_claimed_total = %v, want 6", got)
	}
}

// containsField reports whether a problem names field in its errors.
func containsField(m map[string]any, field string) bool {
	errs, _ := m["errors"].([]any)
	for _, e := range errs {
		if em, ok := e.(map[string]any); ok && em["field"] == field {
			return true
		}
	}
	return false
}

// Two workers of one callee claim concurrently over HTTP: each row once.
func TestConcurrentClaimsOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	const rows = 300
	if _, err := e.db.Pool.Exec(context.Background(), `
		INSERT INTO delegations (delegation_id, caller_id, callee_id) SELECT 'c' || g, 'billing', 'agent-a' FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var cr api.ClaimResponse
				r := e.do("agent-a", "POST", "/v1/claims", map[string]any{"limit": 7})
				if r.Code != 200 {
					t.Errorf("claim: %d %s", r.Code, r.Body)
					return
				}
				r.decode(t, &cr)
				if len(cr.Delegations) == 0 {
					return
				}
				mu.Lock()
				for _, d := range cr.Delegations {
					seen[d.DelegationID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != rows {
		t.Fatalf("claimed %d distinct of %d", len(seen), rows)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s claimed %d times", id, n)
		}
	}
}

// The retry policy over HTTP: given at insert, shown by GET; a transition
// to a status in its "on" schedules the next attempt (GET shows its
// not_before, the feed its queued event with retry_of and not_before), the
// last one is exhausted (GET, the exhausted list); the metrics count both.
// A bad policy is a 422 naming the field, and writes nothing.
func TestRetryPolicyOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	r := e.do("billing", "POST", "/v1/delegations", map[string]any{
		"delegation_id": "p1", "callee_id": "agent-a",
		"retry": map[string]any{"max_attempts": 2, "backoff_seconds": 5, "backoff_max_seconds": 60, "on": []string{"failed", "stuck"}},
	})
	if r.Code != 201 {
		t.Fatalf("insert: %d %s", r.Code, r.Body)
	}
	var d api.Delegation
	e.do("billing", "GET", "/v1/delegations/p1", nil).decode(t, &d)
	if d.Retry.MaxAttempts != 2 || d.Retry.BackoffSeconds != 5 || d.Retry.BackoffMaxSeconds != 60 || len(d.Retry.On) != 2 || d.NotBefore != nil || d.Exhausted {
		t.Fatalf("GET p1: %+v", d)
	}
	if r := e.do("billing", "POST", "/v1/delegations/p1/transitions", map[string]any{"to": "failed", "error": "boom"}); r.Code != 200 {
		t.Fatalf("fail p1: %d %s", r.Code, r.Body)
	}
	d = api.Delegation{}
	e.do("agent-a", "GET", "/v1/delegations/p1%232", nil).decode(t, &d)
	if d.Attempt != 2 || d.RetryOf != "p1" || d.Status != ledger.StatusQueued || d.NotBefore == nil || d.Retry.MaxAttempts != 2 {
		t.Fatalf("GET p1#2: %+v", d)
	}
	// Not due for about 5 s: nothing to claim yet.
	var cr api.ClaimResponse
	e.do("agent-a", "POST", "/v1/claims", map[string]any{"limit": 10}).decode(t, &cr)
	if len(cr.Delegations) != 0 {
		t.Fatalf("claimed before not_before: %+v", cr)
	}
	var feed api.FeedResponse
	e.do("billing", "GET", "/v1/events?to_status=queued", nil).decode(t, &feed)
	var queued *ledger.Event
	for i, ev := range feed.Events {
		if ev.DelegationID == "p1#2" {
			queued = &feed.Events[i]
		}
	}
	if queued == nil || !containsAll(string(queued.Detail), `"retry_of":"p1"`, `"not_before"`) {
		t.Fatalf("feed's queued event of p1#2: %+v", queued)
	}
	if r := e.do("admin", "POST", "/v1/delegations/p1%232/transitions", map[string]any{"to": "failed"}); r.Code != 200 {
		t.Fatalf("fail p1#2: %d %s", r.Code, r.Body)
	}
	d = api.Delegation{}
	e.do("billing", "GET", "/v1/delegations/p1%232", nil).decode(t, &d)
	if !d.Exhausted {
		t.Fatalf("p1#2 not exhausted: %+v", d)
	}
	var list api.ListResponse
	e.do("billing", "GET", "/v1/delegations?exhausted=true", nil).decode(t, &list)
	if len(list.Delegations) != 1 || list.Delegations[0].DelegationID != "p1#2" {
		t.Fatalf("exhausted list: %+v", list)
	}
	list = api.ListResponse{}
	e.do("search", "GET", "/v1/delegations?exhausted=true", nil).decode(t, &list)
	if len(list.Delegations) != 0 {
		t.Fatalf("another caller's exhausted list: %+v", list)
	}
	if r := e.do("billing", "GET", "/v1/delegations?exhausted=maybe", nil); r.Code != 400 {
		t.Fatalf("exhausted=maybe: %d", r.Code)
	}
	got := e.counters()
	if got["sweeper_api_retries_scheduled_total{reason=failed}"] != 1 || got["sweeper_api_retries_exhausted_total{reason=failed}"] != 1 {
		t.Fatalf("metrics %v", got)
	}

	for _, c := range []struct {
		policy map[string]any
		field  string
	}{
		{map[string]any{"max_attempts": 0.5}, ""},
		{map[string]any{"max_attempts": 101}, "retry.max_attempts"},
		// A present 0 is below the documented minimum, not the default.
		{map[string]any{"max_attempts": 0}, "retry.max_attempts"},
		{map[string]any{"backoff_seconds": 0}, "retry.backoff_seconds"},
		{map[string]any{"backoff_max_seconds": 0}, "retry.backoff_max_seconds"},
		{map[string]any{"backoff_seconds": -1}, "retry.backoff_seconds"},
		{map[string]any{"backoff_seconds": 0.001}, "retry.backoff_seconds"},
		{map[string]any{"backoff_seconds": 604801}, "retry.backoff_seconds"},
		{map[string]any{"backoff_max_seconds": 2592001}, "retry.backoff_max_seconds"},
		{map[string]any{"backoff_seconds": 60, "backoff_max_seconds": 30}, "retry.backoff_max_seconds"},
		{map[string]any{"backoff_max_seconds": 10}, "retry.backoff_max_seconds"}, // below the default backoff, 30 s
		// Past on's maxItems (2) a member repeats.
		{map[string]any{"on": []string{"stuck", "failed", "stuck"}}, "retry.on"},
		{map[string]any{"on": []string{}}, "retry.on"},
		{map[string]any{"on": []string{"completed"}}, "retry.on"},
		{map[string]any{"unknown": 1}, ""},
	} {
		r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "bad", "callee_id": "agent-a", "retry": c.policy})
		if want := map[bool]int{true: 400, false: 422}[c.field == ""]; r.Code != want {
			t.Fatalf("policy %v: %d %s, want %d", c.policy, r.Code, r.Body, want)
		}
		if c.field != "" && !containsAll(string(r.Body), c.field) {
			t.Fatalf("policy %v: %s does not name %s", c.policy, r.Body, c.field)
		}
	}
	if _, err := e.l.Get(context.Background(), "bad"); err == nil {
		t.Fatal("a refused insert wrote a row")
	}
}

// containsAll reports whether s contains every part.
func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
