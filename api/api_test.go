package api_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/ledger"
)

func TestEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})

	// Insert: 201, then the retry and the duplicate key answer 200.
	r := e.do("billing", "POST", "/v1/delegations", map[string]any{
		"delegation_id": "d1", "callee_id": "agent-a", "task_preview": "render invoice",
		"idempotency_key": "k1", "timeout_seconds": 600,
	})
	if r.Code != 201 || r.json(t)["outcome"] != "inserted" || r.Header.Get("Location") != "/v1/delegations/d1" {
		t.Fatalf("insert: %d %s", r.Code, r.Body)
	}
	if r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "d1", "callee_id": "agent-a"}); r.Code != 200 || r.json(t)["outcome"] != "already_exists" {
		t.Fatalf("retry: %d %s", r.Code, r.Body)
	}
	if r := e.do("billing", "POST", "/v1/delegations", map[string]any{"delegation_id": "d2", "callee_id": "agent-a", "idempotency_key": "k1"}); r.Code != 200 || r.json(t)["outcome"] != "duplicate_key" || r.json(t)["delegation_id"] != "d1" {
		t.Fatalf("duplicate key: %d %s", r.Code, r.Body)
	}
	if r := e.do("admin", "POST", "/v1/delegations", map[string]any{"delegation_id": "d1", "caller_id": "search", "callee_id": "agent-a"}); r.Code != 409 {
		t.Fatalf("same id, other caller: %d %s", r.Code, r.Body)
	}
	if r := e.do("admin", "POST", "/v1/delegations", map[string]any{"delegation_id": "d3", "caller_id": "billing", "callee_id": "agent-a", "deadline": "2099-01-01T00:00:00Z", "status": "in_progress"}); r.Code != 201 {
		t.Fatalf("insert with deadline: %d %s", r.Code, r.Body)
	}

	// Get.
	var d ledger.Delegation
	r = e.do("billing", "GET", "/v1/delegations/d1", nil)
	r.decode(t, &d)
	if r.Code != 200 || d.CallerID != "billing" || d.Status != ledger.StatusQueued || d.TaskPreview != "render invoice" {
		t.Fatalf("get: %d %s", r.Code, r.Body)
	}
	if r := e.do("billing", "GET", "/v1/delegations/missing", nil); r.Code != 404 {
		t.Fatalf("get missing: %d", r.Code)
	}

	// Transitions: applied, unchanged, backward, terminal.
	tr := func(tok, id, to string) resp {
		return e.do(tok, "POST", "/v1/delegations/"+id+"/transitions", map[string]any{"to": to, "reason": "test"})
	}
	if r := tr("agent-a", "d1", "in_progress"); r.Code != 200 || r.json(t)["outcome"] != "applied" {
		t.Fatalf("applied: %d %s", r.Code, r.Body)
	}
	if r := tr("agent-a", "d1", "in_progress"); r.Code != 200 || r.json(t)["outcome"] != "unchanged" {
		t.Fatalf("unchanged: %d %s", r.Code, r.Body)
	}
	if r := tr("agent-a", "d1", "queued"); r.Code != 409 || r.json(t)["outcome"] != "rejected_backward" || r.json(t)["current_status"] != "in_progress" {
		t.Fatalf("backward: %d %s", r.Code, r.Body)
	}

	// Heartbeats.
	if r := e.do("agent-a", "POST", "/v1/delegations/d1/heartbeat", nil); r.Code != 200 || r.json(t)["live"] != true || r.json(t)["status"] != "in_progress" {
		t.Fatalf("heartbeat: %d %s", r.Code, r.Body)
	}
	if r := e.do("agent-a", "POST", "/v1/heartbeats", map[string]any{"ids": []string{"d1", "d3", "nope"}}); r.Code != 200 || fmt.Sprint(r.json(t)["not_live"]) != "[nope]" {
		t.Fatalf("heartbeats: %d %s", r.Code, r.Body)
	}
	if r := e.do("agent-a", "POST", "/v1/delegations/d1/transitions", map[string]any{"to": "completed", "result": "ok"}); r.Code != 200 {
		t.Fatalf("complete: %d %s", r.Code, r.Body)
	}
	if r := tr("agent-a", "d1", "failed"); r.Code != 409 || r.json(t)["outcome"] != "rejected_terminal" {
		t.Fatalf("terminal: %d %s", r.Code, r.Body)
	}
	if r := e.do("agent-a", "POST", "/v1/delegations/d1/heartbeat", nil); r.Code != 200 || r.json(t)["live"] != false || r.json(t)["status"] != "completed" {
		t.Fatalf("heartbeat on terminal: %d %s", r.Code, r.Body)
	}

	// Events, with the API actor.
	var evs api.EventsResponse
	r = e.do("reader", "GET", "/v1/delegations/d1/events", nil)
	r.decode(t, &evs)
	if r.Code != 200 || len(evs.Events) != 3 || evs.Events[1].Actor != "api:agent-a" || evs.Events[1].Reason != "test" || evs.Events[0].Actor != "api:billing" {
		t.Fatalf("events: %d %s", r.Code, r.Body)
	}

	// List, paged.
	var page api.ListResponse
	r = e.do("billing", "GET", "/v1/delegations?limit=1", nil)
	r.decode(t, &page)
	if r.Code != 200 || len(page.Delegations) != 1 || page.NextCursor == "" {
		t.Fatalf("list: %d %s", r.Code, r.Body)
	}
	r = e.do("billing", "GET", "/v1/delegations?limit=1&cursor="+page.NextCursor, nil)
	page = api.ListResponse{}
	r.decode(t, &page)
	if r.Code != 200 || len(page.Delegations) != 1 || page.NextCursor != "" {
		t.Fatalf("list page 2: %d %s", r.Code, r.Body)
	}
	r = e.do("billing", "GET", "/v1/delegations?in_flight=true", nil)
	page = api.ListResponse{}
	r.decode(t, &page)
	if r.Code != 200 || len(page.Delegations) != 1 || page.Delegations[0].DelegationID != "d3" {
		t.Fatalf("in flight: %d %s", r.Code, r.Body)
	}
	if r := e.do("reader", "GET", "/v1/delegations", nil); r.Code != 400 || r.json(t)["field"] != "filter" {
		t.Fatalf("list without filter: %d %s", r.Code, r.Body)
	}

	// Summary.
	var sum ledger.Summary
	r = e.do("reader", "GET", "/v1/summary", nil)
	r.decode(t, &sum)
	if r.Code != 200 || sum.InFlight != 1 || sum.ByStatus[ledger.StatusInProgress] != 1 || len(sum.ByCaller) != 1 {
		t.Fatalf("summary: %d %s", r.Code, r.Body)
	}

	// Feed.
	var feed api.FeedResponse
	r = e.do("reader", "GET", "/v1/events?wait=5s&to_status=completed", nil)
	r.decode(t, &feed)
	if r.Code != 200 || len(feed.Events) != 1 || feed.Events[0].DelegationID != "d1" || feed.NextAfter != feed.Events[0].ID {
		t.Fatalf("feed: %d %s", r.Code, r.Body)
	}

	// The document itself, and problems for what is not an endpoint.
	if r := e.do("reader", "GET", "/v1/openapi.json", nil); r.Code != 200 || r.json(t)["openapi"] != "3.1.0" {
		t.Fatalf("openapi: %d", r.Code)
	}
	if r := e.do("reader", "GET", "/v1/nothing", nil); r.Code != 404 || r.json(t)["type"] != "urn:sweeper:problem:no-such-endpoint" {
		t.Fatalf("unknown path: %d %s", r.Code, r.Body)
	}
	if r := e.do("reader", "DELETE", "/v1/delegations/d1", nil); r.Code != 405 || r.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("wrong method: %d %v %s", r.Code, r.Header, r.Body)
	}
}

// Every endpoint for every role, on a row of the token's own principal and
// on another's.
func TestRoleMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	type call struct {
		method, path string
		body         any
	}
	endpoints := map[string]func(own, other string) (ownCall, otherCall call){
		"get": func(own, other string) (call, call) {
			return call{"GET", "/v1/delegations/" + own, nil}, call{"GET", "/v1/delegations/" + other, nil}
		},
		"events": func(own, other string) (call, call) {
			return call{"GET", "/v1/delegations/" + own + "/events", nil}, call{"GET", "/v1/delegations/" + other + "/events", nil}
		},
		"heartbeat": func(own, other string) (call, call) {
			return call{"POST", "/v1/delegations/" + own + "/heartbeat", nil}, call{"POST", "/v1/delegations/" + other + "/heartbeat", nil}
		},
		"cancel": func(own, other string) (call, call) {
			b := map[string]any{"to": "failed", "reason": "cancelled"}
			return call{"POST", "/v1/delegations/" + own + "/transitions", b}, call{"POST", "/v1/delegations/" + other + "/transitions", b}
		},
		"complete": func(own, other string) (call, call) {
			b := map[string]any{"to": "completed"}
			return call{"POST", "/v1/delegations/" + own + "/transitions", b}, call{"POST", "/v1/delegations/" + other + "/transitions", b}
		},
		"insert": func(own, other string) (call, call) {
			return call{"POST", "/v1/delegations", map[string]any{"delegation_id": own + "-new", "caller_id": "billing", "callee_id": "agent-a"}},
				call{"POST", "/v1/delegations", map[string]any{"delegation_id": other + "-new", "caller_id": "search", "callee_id": "agent-b"}}
		},
		"list": func(own, other string) (call, call) {
			return call{"GET", "/v1/delegations?caller_id=billing", nil}, call{"GET", "/v1/delegations?caller_id=search", nil}
		},
		"list-callee": func(own, other string) (call, call) {
			return call{"GET", "/v1/delegations?callee_id=agent-a", nil}, call{"GET", "/v1/delegations?callee_id=agent-b", nil}
		},
		"heartbeats": func(own, other string) (call, call) {
			return call{"POST", "/v1/heartbeats", map[string]any{"ids": []string{own}}}, call{"POST", "/v1/heartbeats", map[string]any{"ids": []string{other}}}
		},
		"feed": func(own, other string) (call, call) {
			return call{"GET", "/v1/events?caller_id=billing", nil}, call{"GET", "/v1/events?caller_id=search", nil}
		},
		"feed-callee": func(own, other string) (call, call) {
			return call{"GET", "/v1/events?callee_id=agent-a", nil}, call{"GET", "/v1/events?callee_id=agent-b", nil}
		},
		"summary": func(own, other string) (call, call) {
			return call{"GET", "/v1/summary?caller_id=billing", nil}, call{"GET", "/v1/summary?caller_id=search", nil}
		},
		"retry": func(own, other string) (call, call) {
			return call{"POST", "/v1/delegations/" + own + "/retry", nil}, call{"POST", "/v1/delegations/" + other + "/retry", nil}
		},
		"attempts": func(own, other string) (call, call) {
			return call{"GET", "/v1/delegations/" + own + "/attempts", nil}, call{"GET", "/v1/delegations/" + other + "/attempts", nil}
		},
		"openapi": func(own, other string) (call, call) {
			return call{"GET", "/v1/openapi.json", nil}, call{"GET", "/v1/openapi.json", nil}
		},
	}
	// want[endpoint][token] = {own code, other code}. The "own" row is
	// billing's delegation to agent-a; "other" is search's to agent-b.
	want := map[string]map[string][2]int{
		"get":         {"billing": {200, 404}, "agent-a": {200, 404}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"events":      {"billing": {200, 404}, "agent-a": {200, 404}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"heartbeat":   {"billing": {403, 404}, "agent-a": {200, 404}, "reader": {403, 403}, "admin": {200, 200}, "": {401, 401}},
		"cancel":      {"billing": {200, 404}, "agent-a": {200, 404}, "reader": {403, 403}, "admin": {200, 200}, "": {401, 401}},
		"complete":    {"billing": {403, 404}, "agent-a": {200, 404}, "reader": {403, 403}, "admin": {200, 200}, "": {401, 401}},
		"insert":      {"billing": {201, 403}, "agent-a": {403, 403}, "reader": {403, 403}, "admin": {201, 201}, "": {401, 401}},
		"list":        {"billing": {200, 403}, "agent-a": {200, 200}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"list-callee": {"billing": {200, 200}, "agent-a": {200, 403}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"heartbeats":  {"billing": {403, 403}, "agent-a": {200, 200}, "reader": {403, 403}, "admin": {200, 200}, "": {401, 401}},
		"feed":        {"billing": {200, 403}, "agent-a": {200, 200}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"feed-callee": {"billing": {200, 200}, "agent-a": {200, 403}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"summary":     {"billing": {200, 403}, "agent-a": {403, 403}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		// The rows are in progress: a retry the token may make is refused
		// by the lifecycle (409 not_retryable), one it may not is 403/404.
		"retry":    {"billing": {409, 404}, "agent-a": {403, 404}, "reader": {403, 403}, "admin": {409, 409}, "": {401, 401}},
		"attempts": {"billing": {200, 404}, "agent-a": {200, 404}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
		"openapi":  {"billing": {200, 200}, "agent-a": {200, 200}, "reader": {200, 200}, "admin": {200, 200}, "": {401, 401}},
	}
	n := 0
	for ep, byToken := range want {
		for tok, codes := range byToken {
			n++
			own, other := fmt.Sprintf("own-%d", n), fmt.Sprintf("other-%d", n)
			e.seed(own, "billing", "agent-a", ledger.StatusInProgress)
			e.seed(other, "search", "agent-b", ledger.StatusInProgress)
			ownCall, otherCall := endpoints[ep](own, other)
			for i, c := range []call{ownCall, otherCall} {
				r := e.do(tok, c.method, c.path, c.body)
				if r.Code != codes[i] {
					t.Errorf("%s as %q on %s row: %d, want %d: %s", ep, tok, []string{"own", "other"}[i], r.Code, codes[i], r.Body)
				}
			}
		}
	}
	if len(want) != len(endpoints) {
		t.Fatalf("matrix covers %d endpoints of %d", len(want), len(endpoints))
	}

	// Narrowed reads return only the token's own rows.
	for _, c := range []struct{ tok, path, field, value string }{
		{"billing", "/v1/delegations?status=in_progress", "caller_id", "billing"},
		{"agent-a", "/v1/delegations?status=in_progress", "callee_id", "agent-a"},
		{"billing", "/v1/events", "caller_id", "billing"},
		{"agent-a", "/v1/events", "callee_id", "agent-a"},
	} {
		m := e.do(c.tok, "GET", c.path, nil).json(t)
		list, _ := m["delegations"].([]any)
		if list == nil {
			list, _ = m["events"].([]any)
		}
		if len(list) == 0 {
			t.Errorf("%s as %s: nothing returned", c.path, c.tok)
		}
		for _, it := range list {
			if v := it.(map[string]any)[c.field]; v != c.value {
				t.Errorf("%s as %s returned a row with %s %v", c.path, c.tok, c.field, v)
			}
		}
	}
	// A worker's batch heartbeat reports another callee's row as not live
	// and leaves it alone.
	e.seed("theirs", "search", "agent-b", ledger.StatusInProgress)
	before, _ := e.l.Get(context.Background(), "theirs")
	r := e.do("agent-a", "POST", "/v1/heartbeats", map[string]any{"ids": []string{"theirs"}})
	after, _ := e.l.Get(context.Background(), "theirs")
	if fmt.Sprint(r.json(t)["not_live"]) != "[theirs]" || !after.LastHeartbeat.Equal(*before.LastHeartbeat) {
		t.Fatalf("worker beat another's row: %s", r.Body)
	}
}

// Two (here twenty) concurrent inserts with one idempotency key: one row.
func TestIdempotentInsertRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	const n = 20
	var wg sync.WaitGroup
	codes := make([]int, n)
	ids := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			r := e.do("billing", "POST", "/v1/delegations", map[string]any{
				"delegation_id": fmt.Sprintf("race-%d", i), "callee_id": "agent-a", "idempotency_key": "same",
			})
			codes[i] = r.Code
			var ir api.InsertResponse
			r.decode(t, &ir)
			ids[i] = ir.DelegationID
		})
	}
	close(start)
	wg.Wait()
	created := 0
	for i, c := range codes {
		switch c {
		case 201:
			created++
		case 200:
		default:
			t.Fatalf("insert %d: %d", i, c)
		}
		if ids[i] != ids[0] {
			t.Fatalf("inserts disagree on the delegation: %v", ids)
		}
	}
	var rows int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM delegations WHERE idempotency_key = 'same'`).Scan(&rows); err != nil || rows != 1 || created != 1 {
		t.Fatalf("%d rows, %d created (%v)", rows, created, err)
	}
}

// With the token cache off (TokenCacheTTL < 0) a revoked token is refused
// at the next request; TestRevokedTokenRefusedWithinTTL covers the cache.
func TestRevokedTokenRefusedAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{TokenCacheTTL: -1})
	if r := e.do("reader", "GET", "/v1/summary", nil); r.Code != 200 {
		t.Fatalf("%d", r.Code)
	}
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE api_tokens SET revoked_at = now() WHERE name = 'reader'`); err != nil {
		t.Fatal(err)
	}
	r := e.do("reader", "GET", "/v1/summary", nil)
	if r.Code != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("revoked: %d %s", r.Code, r.Body)
	}
	for _, hdr := range []string{"", "Bearer", "Basic abc", "Bearer swp_nope", "bearer " + e.tokens["admin"] + "x"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/summary", nil)
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		if r := e.send(req); r.Code != 401 {
			t.Fatalf("Authorization %q: %d", hdr, r.Code)
		}
	}
	// Lower-case scheme is accepted (RFC 9110: case-insensitive).
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/summary", nil)
	req.Header.Set("Authorization", "bearer "+e.tokens["admin"])
	if r := e.send(req); r.Code != 200 {
		t.Fatalf("lower-case bearer: %d", r.Code)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{RateLimit: 0.001, RateBurst: 2})
	for i := range 2 {
		if r := e.do("reader", "GET", "/v1/summary", nil); r.Code != 200 {
			t.Fatalf("request %d: %d", i, r.Code)
		}
	}
	r := e.do("reader", "GET", "/v1/summary", nil)
	if r.Code != 429 || r.Header.Get("Retry-After") == "" || r.json(t)["type"] != "urn:sweeper:problem:rate-limited" {
		t.Fatalf("over the limit: %d %v %s", r.Code, r.Header, r.Body)
	}
	// Another token has its own bucket.
	if r := e.do("admin", "GET", "/v1/summary", nil); r.Code != 200 {
		t.Fatalf("other token: %d", r.Code)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				got[mf.GetName()] += c.GetValue()
			}
		}
	}
	if got["sweeper_api_rate_limited_total"] != 1 || got["sweeper_api_requests_total"] != 4 {
		t.Fatalf("metrics %v", got)
	}
}

// The feed long poll returns when the sweep marks a row (woken, well before
// its wait ends),
// and a consumer that restarts from its cursor, on a new handler, misses
// nothing and sees nothing twice while writers keep writing.
func TestFeedLongPollAndResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	ctx := context.Background()
	if _, err := e.l.Insert(ctx, ledger.NewDelegation{DelegationID: "late", CallerID: "billing", CalleeID: "agent-a", Timeout: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	head := e.do("reader", "GET", "/v1/events?to_status=stuck", nil)
	var fr api.FeedResponse
	head.decode(t, &fr)

	got := make(chan resp, 1)
	waiting := armLongPoll(e)
	go func() {
		got <- e.do("reader", "GET", fmt.Sprintf("/v1/events?to_status=stuck&after=%d&wait=30s", fr.NextAfter), nil)
	}()
	waiting()
	swept := sweepOnce(t, e.db.Pool)
	select {
	case r := <-got:
		d := time.Since(swept)
		r.decode(t, &fr)
		if len(fr.Events) != 1 || fr.Events[0].DelegationID != "late" || fr.Events[0].Actor != "sweeper" {
			t.Fatalf("long poll: %s", r.Body)
		}
		// Woken by the event's notification, not by the end of its 30 s
		// wait; how fast is measured by `make bench` (the feed latency).
		if d > 10*time.Second {
			t.Fatalf("long poll returned %s after the sweep started", d)
		}
		t.Logf("long poll returned %s after the sweep started (its commit is later)", d)
	case <-time.After(30 * time.Second):
		t.Fatal("long poll did not return after the sweep")
	}

	// Resume: writers insert while a consumer reads in small pages and is
	// restarted (new handler, new server) half way.
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := e.l.Insert(ctx, ledger.NewDelegation{DelegationID: fmt.Sprintf("w%d-%d", w, i), CallerID: "search", CalleeID: "agent-b"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := map[string]int{}
	consume := func(e *env, after int64, stopAt int) int64 {
		for len(seen) < stopAt {
			var fr api.FeedResponse
			e.do("reader", "GET", fmt.Sprintf("/v1/events?caller_id=search&limit=7&wait=10s&after=%d", after), nil).decode(t, &fr)
			for _, ev := range fr.Events {
				seen[ev.DelegationID]++
			}
			if len(fr.Events) == 0 && !fr.Pending {
				t.Fatalf("feed went quiet at %d of %d", len(seen), writers*each)
			}
			after = fr.NextAfter
		}
		return after
	}
	cursor := consume(e, 0, writers*each/2)
	e.h.Stop()
	e.srv.Close()
	e2 := newEnvOn(t, e.db, api.Options{})
	e2.tokens = e.tokens
	consume(e2, cursor, writers*each)
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s seen %d times", id, n)
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("saw %d of %d", len(seen), writers*each)
	}
}

func TestStopEndsLongPolls(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	got := make(chan resp, 1)
	waiting := armLongPoll(e)
	go func() { got <- e.do("reader", "GET", "/v1/events?caller_id=nobody&wait=60s", nil) }()
	waiting()
	start := time.Now()
	e.h.Stop()
	r := <-got
	if r.Code != 200 || time.Since(start) > 5*time.Second {
		t.Fatalf("after Stop: %d in %s", r.Code, time.Since(start))
	}
}

// tokensInLogs is checked by TestHostileInput and the others through
// assertNoSecrets.
func assertNoSecrets(t *testing.T, e *env, logs string) {
	t.Helper()
	for name, tok := range e.tokens {
		if strings.Contains(logs, tok) || strings.Contains(logs, tok[len("swp_"):]) {
			t.Fatalf("token %s appears in the logs", name)
		}
	}
	if strings.Contains(strings.ToLower(logs), "bearer") || strings.Contains(strings.ToLower(logs), "authorization") {
		t.Fatalf("logs mention the Authorization header:\n%s", logs)
	}
}

func TestLogsNeverHoldTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Options{})
	for name := range e.tokens {
		e.do(name, "GET", "/v1/summary", nil)
		e.do(name, "POST", "/v1/delegations", "{bad json")
		e.do(name, "GET", "/v1/delegations/"+e.tokens[name], nil)
	}
	e.do(e.tokens["admin"]+"x", "GET", "/v1/summary", nil)
	logs := e.logs.String()
	if !strings.Contains(logs, `"route":"/v1/summary"`) {
		t.Fatalf("no request log captured:\n%s", logs)
	}
	assertNoSecrets(t, e, logs)
	if slices.Contains(strings.Split(logs, "\n"), "") && len(logs) < 100 {
		t.Fatal("too few logs to mean anything")
	}
}
