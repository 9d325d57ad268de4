package api_test

import (
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/webhook"
)

// The webhook endpoints, every answer validated against the OpenAPI
// document: admin only; the secret in create's and rotate-secret's answers
// and nowhere else (list, get, resume, logs); bad fields named (422);
// unknown ids 404.
func TestWebhookEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{WebhooksAllowHTTP: false})
	for _, tok := range []string{"billing", "agent-a", "reader"} {
		if r := e.do(tok, "GET", "/v1/webhooks", nil); r.Code != 403 {
			t.Fatalf("%s lists webhooks: %d", tok, r.Code)
		}
		if r := e.do(tok, "POST", "/v1/webhooks", map[string]any{"url": "https://hooks.example.com/x"}); r.Code != 403 {
			t.Fatalf("%s creates a webhook: %d", tok, r.Code)
		}
	}
	var created webhook.Created
	r := e.do("admin", "POST", "/v1/webhooks", map[string]any{"url": "https://hooks.example.com/x", "events": []string{"stuck", "failed"}, "caller_id": "billing"})
	if r.Code != 201 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %d %s", r.Code, r.Body)
	}
	r.decode(t, &created)
	if !strings.HasPrefix(created.Secret, "whsec_") || r.Header.Get("Location") != "/v1/webhooks/"+created.ID {
		t.Fatalf("create: %s", r.Body)
	}
	for _, bad := range []struct {
		body  string
		field string
	}{
		{`{"url":"http://hooks.example.com/x"}`, "url"},
		{`{"url":"https://10.0.0.1/x"}`, "url"},
		{`{"url":"https://hooks.example.com/x","events":["exploded"]}`, "events[0]"},
		{`{"url":"https://hooks.example.com/x","callee_id":"  "}`, "callee_id"},
		{`{"url":"HTTPS://hooks.example.com/x"}`, "url"},
		{`{"url":"https://a"}`, "url"},
		{`{"url":"https://hooks.example.com/x","events":["queued","dispatched","in_progress","completed","failed","stuck","stuck"]}`, "events"},
		{`{"url":"https://hooks.example.com/x","events":["stuck","stuck"]}`, "events[1]"},
		{`{}`, "url"},
	} {
		r := e.do("admin", "POST", "/v1/webhooks", bad.body)
		if r.Code != 422 || r.json(t)["field"] != bad.field {
			t.Errorf("create %s: %d %s", bad.body, r.Code, r.Body)
		}
	}
	if r := e.do("admin", "POST", "/v1/webhooks", `{"url":"https://x.example.com","secret":"whsec_mine"}`); r.Code != 400 {
		t.Fatalf("a secret of one's own: %d %s", r.Code, r.Body)
	}

	path := "/v1/webhooks/" + created.ID
	var shown []string
	r = e.do("admin", "GET", "/v1/webhooks", nil)
	shown = append(shown, string(r.Body))
	var list api.WebhooksResponse
	r.decode(t, &list)
	if r.Code != 200 || len(list.Subscriptions) != 1 || list.Subscriptions[0].CallerID != "billing" {
		t.Fatalf("list: %d %s", r.Code, r.Body)
	}
	r = e.do("admin", "GET", path, nil)
	shown = append(shown, string(r.Body))
	if r.Code != 200 || r.json(t)["state"] != "active" {
		t.Fatalf("get: %d %s", r.Code, r.Body)
	}
	r = e.do("admin", "POST", path+"/rotate-secret", nil)
	var rotated webhook.Created
	r.decode(t, &rotated)
	if r.Code != 200 || rotated.Secret == created.Secret || rotated.RotationEndsAt == nil {
		t.Fatalf("rotate: %d %s", r.Code, r.Body)
	}
	r = e.do("admin", "POST", path+"/resume", nil)
	shown = append(shown, string(r.Body))
	if r.Code != 200 {
		t.Fatalf("resume: %d %s", r.Code, r.Body)
	}
	r = e.do("admin", "GET", path+"/attempts?limit=10", nil)
	if r.Code != 200 || string(r.Body) != "{\"attempts\":[]}\n" {
		t.Fatalf("attempts: %d %q", r.Code, r.Body)
	}
	if r := e.do("admin", "GET", path+"/attempts?limit=51", nil); r.Code != 400 {
		t.Fatalf("attempts?limit=51: %d", r.Code)
	}
	for _, s := range shown {
		if strings.Contains(s, created.Secret) || strings.Contains(s, rotated.Secret) || strings.Contains(s, "whsec_") {
			t.Fatalf("a secret in %s", s)
		}
	}
	if strings.Contains(e.logs.String(), strings.TrimPrefix(created.Secret, "whsec_")) {
		t.Fatal("a secret in the log")
	}
	if r := e.do("admin", "PATCH", path, nil); r.Code != 405 {
		t.Fatalf("PATCH: %d", r.Code)
	}
	if r := e.do("admin", "DELETE", path, nil); r.Code != 204 {
		t.Fatalf("delete: %d %s", r.Code, r.Body)
	}
	for _, p := range []string{path, path + "/attempts"} {
		if r := e.do("admin", "GET", p, nil); r.Code != 404 {
			t.Fatalf("GET %s after delete: %d", p, r.Code)
		}
	}
	// A malformed id is refused before any query, naming it, on every
	// operation of a subscription.
	for _, op := range []struct{ method, suffix string }{
		{"GET", ""}, {"DELETE", ""}, {"POST", "/rotate-secret"}, {"POST", "/resume"}, {"GET", "/attempts"},
	} {
		for _, id := range []string{"wh_nope", "wh_" + strings.Repeat("A", 24), "wh_" + strings.Repeat("0", 25)} {
			r := e.do("admin", op.method, "/v1/webhooks/"+id+op.suffix, nil)
			if r.Code != 422 || r.json(t)["field"] != "id" {
				t.Errorf("%s /v1/webhooks/%s%s: %d %s, want 422 naming id", op.method, id, op.suffix, r.Code, r.Body)
			}
		}
	}
	if r := e.do("admin", "GET", path+"?verbose=1", nil); r.Code != 400 || r.json(t)["field"] != "verbose" {
		t.Fatalf("an unknown query parameter: %d %s", r.Code, r.Body)
	}
	if r := e.do("admin", "POST", path+"/resume", nil); r.Code != 404 {
		t.Fatalf("resume after delete: %d", r.Code)
	}
}
