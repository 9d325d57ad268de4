package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/api"
)

// Heartbeats carry progress over HTTP, one (optional body) or many (beats);
// a heartbeat on a stuck row answers why; inserts take the three timeouts;
// bad progress or timeouts are 422 problems naming the field, and nothing
// is written. Every response is validated against the OpenAPI document.
func TestProgressOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	ctx := context.Background()
	r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "p1", "callee_id": "agent-a",
		"status": "in_progress", "progress_timeout_seconds": 300, "queue_timeout_seconds": 60, "start_timeout_seconds": 30})
	if r.Code != 201 {
		t.Fatalf("insert with timeouts: %d %s", r.Code, r.Body)
	}
	e.seed("p2", "billing", "agent-a", "in_progress")
	for _, f := range []string{"progress_timeout_seconds", "queue_timeout_seconds", "start_timeout_seconds"} {
		r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "bad-" + f, "callee_id": "agent-a", f: 0.5})
		if r.Code != 422 || !strings.Contains(string(r.Body), f) {
			t.Errorf("insert with %s 0.5: %d %s", f, r.Code, r.Body)
		}
	}

	// One heartbeat: no body, an empty body, a progress.
	if r := e.do("agent-a", "POST", "/v1/delegations/p1/heartbeat", nil); r.Code != 200 || r.json(t)["live"] != true {
		t.Fatalf("heartbeat without a body: %d %s", r.Code, r.Body)
	}
	if r := e.do("agent-a", "POST", "/v1/delegations/p1/heartbeat", map[string]any{"progress": map[string]any{"step": 3, "of": 7}}); r.Code != 200 || r.json(t)["live"] != true {
		t.Fatalf("heartbeat with progress: %d %s", r.Code, r.Body)
	}
	got := e.do("billing", "GET", "/v1/delegations/p1", nil).json(t)
	if p, _ := got["progress"].(map[string]any); p["step"] != 3.0 || got["progress_at"] == nil ||
		got["progress_timeout_seconds"] != 300.0 || got["queue_timeout_seconds"] != 60.0 || got["start_timeout_seconds"] != 30.0 {
		t.Fatalf("get: %v", got)
	}
	for _, c := range []struct {
		body  string
		field string
	}{
		{`{"progress": [1]}`, "progress"},
		{`{"progress": "step 3"}`, "progress"},
		{`{"progress": {"s": "` + strings.Repeat("x", 8200) + `"}}`, "progress"},
		{`{"progres": {}}`, "progres"},
	} {
		r := e.do("agent-a", "POST", "/v1/delegations/p1/heartbeat", c.body)
		if r.Code != 422 && r.Code != 400 || !strings.Contains(string(r.Body), c.field) {
			t.Errorf("heartbeat %.40s: %d %s, want a problem naming %s", c.body, r.Code, r.Body, c.field)
		}
	}

	// Many: ids and beats together; a bad beat refuses the whole request.
	r = e.do("agent-a", "POST", "/v1/heartbeats", map[string]any{"ids": []string{"p2"},
		"beats": []map[string]any{{"id": "p1", "progress": map[string]any{"step": 4}}, {"id": "nope", "progress": map[string]any{}}}})
	if r.Code != 200 || fmt.Sprint(r.json(t)["not_live"]) != "[nope]" {
		t.Fatalf("heartbeats with beats: %d %s", r.Code, r.Body)
	}
	r = e.do("agent-a", "POST", "/v1/heartbeats", map[string]any{"ids": []string{"p2"},
		"beats": []map[string]any{{"id": "p1", "progress": map[string]any{"step": 5}}, {"id": "p2", "progress": []int{1}}}})
	if r.Code != 422 || r.json(t)["field"] != "beats[1].progress" {
		t.Fatalf("heartbeats with a bad progress: %d %s, want 422 naming beats[1].progress", r.Code, r.Body)
	}
	d, err := e.l.Get(ctx, "p1")
	if err != nil || string(d.Progress) != `{"step": 4}` {
		t.Fatalf("progress after the refused batch: %s, %v; want step 4", d.Progress, err)
	}

	// Stuck: the heartbeat says why.
	if _, err := e.db.Pool.Exec(ctx, `UPDATE delegations SET status = 'stuck', stuck_reason = 'stalled' WHERE delegation_id = 'p1'`); err != nil {
		t.Fatal(err)
	}
	r = e.do("agent-a", "POST", "/v1/delegations/p1/heartbeat", map[string]any{"progress": map[string]any{"step": 6}})
	if m := r.json(t); r.Code != 200 || m["live"] != false || m["status"] != "stuck" || m["reason"] != "stalled" {
		t.Fatalf("heartbeat on the stalled row: %d %s", r.Code, r.Body)
	}
}
