package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/ledger"
)

func TestHostileInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{MaxBodyBytes: 4096})
	e.seed("d1", "billing", "agent-a", ledger.StatusInProgress)
	post := func(path, ct, body string) resp {
		req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["admin"])
		return e.send(req)
	}
	const ins = "/v1/delegations"
	for _, c := range []struct {
		name, path, ct, body string
		code                 int
		slug, field          string
	}{
		{"oversized body", ins, "application/json", `{"delegation_id":"` + strings.Repeat("x", 5000) + `"}`, 413, "body-too-large", ""},
		{"no content type", ins, "", `{}`, 415, "unsupported-media-type", ""},
		{"text/plain", ins, "text/plain", `{}`, 415, "unsupported-media-type", ""},
		{"latin1", ins, "application/json; charset=latin1", `{}`, 415, "unsupported-media-type", ""},
		{"json with charset", ins, "application/json; charset=UTF-8", `{"delegation_id":"cs","caller_id":"billing","callee_id":"a"}`, 201, "", ""},
		{"NUL in an id", ins, "application/json", `{"delegation_id":"a\u0000b","caller_id":"billing","callee_id":"a"}`, 422, "invalid-field", "delegation_id"},
		{"NUL in a preview", ins, "application/json", `{"delegation_id":"n","caller_id":"billing","callee_id":"a","task_preview":"x\u0000"}`, 422, "invalid-field", "task_preview"},
		{"invalid UTF-8", ins, "application/json", "{\"delegation_id\":\"\xff\xfe\",\"caller_id\":\"billing\",\"callee_id\":\"a\"}", 400, "invalid-json", ""},
		{"unknown field", ins, "application/json", `{"delegation_id":"u","callee_id":"a","caller_id":"billing","owner":"me"}`, 400, "invalid-json", "owner"},
		{"field in the wrong case", ins, "application/json", `{"Delegation_ID":"u","callee_id":"a","caller_id":"billing"}`, 400, "invalid-json", "Delegation_ID"},
		{"wrong type", ins, "application/json", `{"delegation_id":5}`, 400, "invalid-json", "delegation_id"},
		{"trailing data", ins, "application/json", `{"delegation_id":"t","caller_id":"billing","callee_id":"a"} {}`, 400, "invalid-json", ""},
		{"array body", ins, "application/json", `[1]`, 400, "invalid-json", ""},
		{"empty body", ins, "application/json", ``, 400, "invalid-json", ""},
		{"truncated", ins, "application/json", `{"delegation_id":`, 400, "invalid-json", ""},
		{"blank id", ins, "application/json", `{"delegation_id":"  ","caller_id":"billing","callee_id":"a"}`, 422, "invalid-field", "delegation_id"},
		{"id too long", ins, "application/json", `{"delegation_id":"` + strings.Repeat("i", 256) + `","caller_id":"billing","callee_id":"a"}`, 422, "invalid-field", "delegation_id"},
		{"terminal initial status", ins, "application/json", `{"delegation_id":"s","caller_id":"billing","callee_id":"a","status":"completed"}`, 422, "invalid-field", "status"},
		{"bad deadline", ins, "application/json", `{"delegation_id":"s","caller_id":"billing","callee_id":"a","deadline":"tomorrow"}`, 422, "invalid-field", "deadline"},
		{"negative timeout", ins, "application/json", `{"delegation_id":"s","caller_id":"billing","callee_id":"a","timeout_seconds":-1}`, 422, "invalid-field", "timeout_seconds"},
		{"deadline and timeout", ins, "application/json", `{"delegation_id":"s","caller_id":"billing","callee_id":"a","timeout_seconds":5,"deadline":"2099-01-01T00:00:00Z"}`, 422, "invalid-field", "deadline"},
		{"unknown target status", "/v1/delegations/d1/transitions", "application/json", `{"to":"done"}`, 422, "invalid-field", "to"},
		{"missing target status", "/v1/delegations/d1/transitions", "application/json", `{}`, 422, "invalid-field", "to"},
		{"NUL in a result", "/v1/delegations/d1/transitions", "application/json", `{"to":"completed","result":"\u0000"}`, 422, "invalid-field", "result"},
		{"bad id in a batch", "/v1/heartbeats", "application/json", `{"ids":["ok",""]}`, 422, "invalid-field", "ids[1]"},
	} {
		r := post(c.path, c.ct, c.body)
		if r.Code != c.code {
			t.Errorf("%s: %d, want %d: %s", c.name, r.Code, c.code, r.Body)
			continue
		}
		if c.slug == "" {
			continue
		}
		m := r.json(t)
		if m["type"] != "urn:sweeper:problem:"+c.slug || (c.field != "" && m["field"] != c.field) {
			t.Errorf("%s: %s, want type %s field %q", c.name, r.Body, c.slug, c.field)
		}
		for _, leak := range []string{"SQLSTATE", "postgres://", "goroutine", ".go:"} {
			if strings.Contains(string(r.Body), leak) {
				t.Errorf("%s: response leaks %q: %s", c.name, leak, r.Body)
			}
		}
	}

	for _, c := range []struct {
		path, field string
	}{
		{"/v1/events?after=-1", "after"},
		{"/v1/events?after=abc", "after"},
		{"/v1/events?after=99999", "after"},
		{"/v1/events?limit=100000", "limit"},
		{"/v1/events?wait=2h", "wait"},
		{"/v1/events?wait=soon", "wait"},
		{"/v1/events?to_status=done", "to_status"},
		{"/v1/events?secret=1", "secret"},
		{"/v1/events?limit=1&limit=2", "limit"},
		{"/v1/delegations?status=done", "status"},
		{"/v1/delegations?caller_id=a&cursor=garbage", "cursor"},
		{"/v1/delegations?in_flight=yes&caller_id=a", "in_flight"},
		{"/v1/delegations?in_flight=true", "in_flight"},
		{"/v1/delegations?caller_id=%00", "caller_id"},
	} {
		r := e.do("admin", "GET", c.path, nil)
		if r.Code != 400 || r.json(t)["field"] != c.field {
			t.Errorf("GET %s: %d %s, want 400 naming %s", c.path, r.Code, r.Body, c.field)
		}
	}
	// An id that is not valid UTF-8, in the path.
	if r := e.do("admin", "GET", "/v1/delegations/%ff", nil); r.Code != 422 || r.json(t)["field"] != "delegation_id" {
		t.Errorf("bad path id: %d %s", r.Code, r.Body)
	}
	assertNoSecrets(t, e, e.logs.String())
}

func TestBatchLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	ids := make([]string, api.MaxBatchDefault)
	for i := range ids {
		ids[i] = fmt.Sprintf("id-%05d", i)
	}
	e.seed(ids[42], "billing", "agent-a", ledger.StatusInProgress)
	r := e.do("admin", "POST", "/v1/heartbeats", map[string]any{"ids": ids})
	var hr api.HeartbeatsResponse
	r.decode(t, &hr)
	if r.Code != 200 || len(hr.NotLive) != len(ids)-1 {
		t.Fatalf("10k batch: %d, %d not live", r.Code, len(hr.NotLive))
	}
	r = e.do("admin", "POST", "/v1/heartbeats", map[string]any{"ids": append(ids, "one-more")})
	if r.Code != 422 || r.json(t)["field"] != "ids" {
		t.Fatalf("10001 ids: %d %s", r.Code, r.Body)
	}
}
