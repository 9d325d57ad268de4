package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/apiclient"
	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/testdb"
	"github.com/tasksweeper/sweeper/sweep"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// server is the API over a fresh database, served on a real listener, and
// strict clients (answers with fields the types lack fail) for each token.
type server struct {
	db      *testdb.DB
	url     string
	clients map[string]*apiclient.Client
}

func newServer(t *testing.T, opts api.Options) *server {
	t.Helper()
	db := testdb.New(t)
	opts.Pool = db.Pool
	h, err := api.NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.Stop()
	})
	s := &server{db: db, url: srv.URL, clients: map[string]*apiclient.Client{}}
	store := auth.NewStore(db.Pool)
	for _, tk := range []struct {
		name      string
		role      auth.Role
		principal string
	}{{"admin", auth.RoleAdmin, ""}, {"billing", auth.RoleCaller, "billing"}, {"agent", auth.RoleWorker, "agent-a"}, {"reader", auth.RoleReader, ""}} {
		tok, err := store.Create(context.Background(), tk.name, tk.role, tk.principal)
		if err != nil {
			t.Fatal(err)
		}
		c := apiclient.New(srv.URL, tok)
		apiclient.SetStrict(c)
		s.clients[tk.name] = c
	}
	return s
}

func TestEveryEndpoint(t *testing.T) {
	t.Parallel()
	s := newServer(t, api.Options{})
	ctx := context.Background()
	caller, worker, reader, admin := s.clients["billing"], s.clients["agent"], s.clients["reader"], s.clients["admin"]

	deadline := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	res, err := caller.Insert(ctx, apiclient.InsertRequest{DelegationID: "d-1", CalleeID: "agent-a", TaskPreview: "render",
		IdempotencyKey: "k-1", Deadline: &deadline, HeartbeatTimeoutSeconds: 90})
	if err != nil || res != (apiclient.InsertResponse{Outcome: "inserted", DelegationID: "d-1"}) {
		t.Fatalf("Insert = %+v, %v", res, err)
	}
	if res, err := caller.Insert(ctx, apiclient.InsertRequest{DelegationID: "d-1", CalleeID: "agent-a"}); err != nil || res.Outcome != "already_exists" {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	d, err := reader.Get(ctx, "d-1")
	if err != nil || d.CallerID != "billing" || d.Status != apiclient.StatusQueued || !d.Deadline.Equal(deadline) ||
		d.HeartbeatTimeoutSeconds == nil || *d.HeartbeatTimeoutSeconds != 90 || d.Attempt != 1 {
		t.Fatalf("Get = %+v, %v", d, err)
	}
	for i := 2; i <= 4; i++ {
		if _, err := caller.Insert(ctx, apiclient.InsertRequest{DelegationID: fmt.Sprintf("d-%d", i), CalleeID: "agent-a"}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := caller.List(ctx, apiclient.ListQuery{CallerID: "billing", Limit: 3})
	if err != nil || len(page.Delegations) != 3 || page.NextCursor == "" || page.Delegations[0].DelegationID != "d-4" {
		t.Fatalf("List = %+v, %v", page, err)
	}
	var all []string
	for d, err := range caller.All(ctx, apiclient.ListQuery{CallerID: "billing", InFlight: true, Limit: 3}) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, d.DelegationID)
	}
	if strings.Join(all, " ") != "d-4 d-3 d-2 d-1" {
		t.Fatalf("All = %v", all)
	}

	if tr, err := worker.Transition(ctx, "d-1", apiclient.TransitionRequest{To: apiclient.StatusInProgress, Reason: "picked up"}); err != nil || tr.Outcome != "applied" {
		t.Fatalf("Transition = %+v, %v", tr, err)
	}
	if hb, err := worker.Heartbeat(ctx, "d-1"); err != nil || !hb.Live || hb.Status != apiclient.StatusInProgress {
		t.Fatalf("Heartbeat = %+v, %v", hb, err)
	}
	if hb, err := worker.HeartbeatProgress(ctx, "d-1", map[string]int{"step": 3}); err != nil || !hb.Live {
		t.Fatalf("HeartbeatProgress = %+v, %v", hb, err)
	}
	if d, err := worker.Get(ctx, "d-1"); err != nil || string(d.Progress) != `{"step":3}` || d.ProgressAt == nil {
		t.Fatalf("progress after a beat: %s at %v, %v", d.Progress, d.ProgressAt, err)
	}
	if nl, err := worker.Beats(ctx, []apiclient.Beat{{ID: "d-1", Progress: json.RawMessage(`{"step":4}`)}, {ID: "gone"}}); err != nil || !slices.Equal(nl, []string{"gone"}) {
		t.Fatalf("Beats = %v, %v", nl, err)
	}
	if d, err := worker.Get(ctx, "d-1"); err != nil || string(d.Progress) != `{"step":4}` {
		t.Fatalf("progress after Beats: %s, %v", d.Progress, err)
	}
	if tr, err := worker.Transition(ctx, "d-2", apiclient.TransitionRequest{To: apiclient.StatusFailed, Error: "no disk"}); err != nil || tr.Status != apiclient.StatusFailed {
		t.Fatalf("Transition = %+v, %v", tr, err)
	}
	notLive, err := worker.Heartbeats(ctx, []string{"d-1", "d-2", "nope"})
	sort.Strings(notLive)
	if err != nil || !slices.Equal(notLive, []string{"d-2", "nope"}) {
		t.Fatalf("Heartbeats = %v, %v", notLive, err)
	}
	evs, err := reader.Events(ctx, "d-1")
	if err != nil || len(evs) != 2 || evs[1].ToStatus != apiclient.StatusInProgress || evs[1].Actor != "api:agent" || evs[1].Reason != "picked up" {
		t.Fatalf("Events = %+v, %v", evs, err)
	}
	r, err := caller.Retry(ctx, "d-2", apiclient.RetryRequest{Reason: "again"})
	if err != nil || r != (apiclient.RetryResponse{Outcome: "created", DelegationID: "d-2#2", Attempt: 2}) {
		t.Fatalf("Retry = %+v, %v", r, err)
	}
	chain, err := caller.Attempts(ctx, "d-2#2")
	if err != nil || len(chain) != 2 || chain[1].RetryOf != "d-2" {
		t.Fatalf("Attempts = %+v, %v", chain, err)
	}
	// Claims and retry policies: a failed attempt of a policy with two
	// attempts is retried by the database, due at once; a worker claims it.
	if _, err := caller.Insert(ctx, apiclient.InsertRequest{DelegationID: "p-1", CalleeID: "agent-a",
		Retry: &apiclient.RetryPolicy{MaxAttempts: 2, BackoffSeconds: 0.01, On: []apiclient.Status{apiclient.StatusFailed}}}); err != nil {
		t.Fatal(err)
	}
	claimed, err := worker.Claim(ctx, "", 10)
	if err != nil || len(claimed) != 4 || claimed[0].Status != apiclient.StatusDispatched {
		t.Fatalf("Claim = %+v, %v", claimed, err)
	}
	if _, err := worker.Transition(ctx, "p-1", apiclient.TransitionRequest{To: apiclient.StatusFailed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	var next []apiclient.Delegation
	for range 1000 { // the next attempt is due 10 ms (±10%) after the failure
		if next, err = worker.Claim(ctx, "", 10); err != nil || len(next) > 0 {
			break
		}
	}
	if err != nil || len(next) != 1 || next[0].RetryOf != "p-1" || next[0].Retry == nil || next[0].Retry.MaxAttempts != 2 {
		t.Fatalf("Claim of the next attempt = %+v, %v", next, err)
	}
	if _, err := worker.Transition(ctx, next[0].DelegationID, apiclient.TransitionRequest{To: apiclient.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	ex, err := caller.List(ctx, apiclient.ListQuery{CallerID: "billing", Exhausted: true})
	if err != nil || len(ex.Delegations) != 1 || !ex.Delegations[0].Exhausted {
		t.Fatalf("exhausted = %+v, %v", ex, err)
	}
	for _, id := range []string{"d-3", "d-4"} {
		if _, err := worker.Transition(ctx, id, apiclient.TransitionRequest{To: apiclient.StatusCompleted}); err != nil {
			t.Fatal(err)
		}
	}

	sum, err := admin.Summary(ctx, "")
	if err != nil || sum.InFlight != 2 || sum.ByStatus.Dispatched != 1 || sum.ByStatus.InProgress != 1 || len(sum.ByCaller) != 1 {
		t.Fatalf("Summary = %+v, %v", sum, err)
	}
	doc, err := reader.OpenAPI(ctx)
	if err != nil || !json.Valid(doc) || !strings.Contains(string(doc), `"/v1/delegations"`) {
		t.Fatalf("OpenAPI: %v", err)
	}
}

func TestProblems(t *testing.T) {
	t.Parallel()
	s := newServer(t, api.Options{})
	ctx := context.Background()
	caller, worker := s.clients["billing"], s.clients["agent"]
	_, err := caller.Get(ctx, "missing")
	var p *apiclient.ProblemError
	if !errors.As(err, &p) || p.Status != 404 || p.Slug() != "not-found" || p.Instance != "/v1/delegations/missing" || !apiclient.IsNotFound(err) {
		t.Fatalf("Get missing = %#v", err)
	}
	_, err = caller.Insert(ctx, apiclient.InsertRequest{DelegationID: " ", CalleeID: "agent-a"})
	if !errors.As(err, &p) || p.Status != 422 || p.Field != "delegation_id" || p.Type != "urn:sweeper:problem:invalid-field" {
		t.Fatalf("Insert blank = %#v", err)
	}
	if _, err := caller.Insert(ctx, apiclient.InsertRequest{DelegationID: "x", CalleeID: "agent-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Transition(ctx, "x", apiclient.TransitionRequest{To: apiclient.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	_, err = worker.Transition(ctx, "x", apiclient.TransitionRequest{To: apiclient.StatusFailed})
	if !errors.As(err, &p) || p.Status != 409 || p.Outcome != "rejected_terminal" || p.CurrentStatus != apiclient.StatusCompleted {
		t.Fatalf("refused transition = %#v", err)
	}
	bad := apiclient.New(s.url, "swp_not-a-token")
	if _, err := bad.Summary(ctx, ""); !errors.As(err, &p) || p.Status != 401 {
		t.Fatalf("unknown token = %v", err)
	}
	if strings.Contains(fmt.Sprint(bad), "swp_") {
		t.Fatal("the client prints its token")
	}
}

// TestRetriesAfterRetryAfter: a token over its rate gets 429 with
// Retry-After; the client waits it out and the call succeeds, or, with no
// retries left, returns the problem with RetryAfter.
func TestRetriesAfterRetryAfter(t *testing.T) {
	t.Parallel()
	s := newServer(t, api.Options{RateLimit: 1, RateBurst: 1})
	ctx := context.Background()
	reader := s.clients["reader"]
	start := time.Now()
	for range 3 {
		if _, err := reader.Summary(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("3 calls at 1/s took %s: the client did not wait for Retry-After", waited)
	}
	reader.MaxRetries = 0
	_, err := reader.Summary(ctx, "")
	var p *apiclient.ProblemError
	if !errors.As(err, &p) || p.Status != 429 || p.Slug() != "rate-limited" || p.RetryAfter < time.Second {
		t.Fatalf("no retries left = %#v", err)
	}
	// A context that ends while waiting to retry ends the call.
	reader.MaxRetries = 3
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := reader.Summary(cctx, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled = %v", err)
	}
}

func TestFollowResumesAndWakes(t *testing.T) {
	t.Parallel()
	s := newServer(t, api.Options{})
	ctx := context.Background()
	admin, reader := s.clients["admin"], s.clients["reader"]
	for i := range 3 {
		if _, err := admin.Insert(ctx, apiclient.InsertRequest{DelegationID: fmt.Sprint("f-", i), CallerID: "c", CalleeID: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	take := func(q apiclient.FeedQuery, n int) []apiclient.Event {
		var out []apiclient.Event
		for ev, err := range reader.Follow(ctx, q) {
			if err != nil {
				t.Fatal(err)
			}
			if out = append(out, ev); len(out) == n {
				break
			}
		}
		return out
	}
	first := take(apiclient.FeedQuery{CallerID: "c"}, 2)
	rest := take(apiclient.FeedQuery{CallerID: "c", After: first[1].ID}, 1)
	var got []string
	for _, ev := range append(first, rest...) {
		got = append(got, ev.DelegationID)
	}
	if strings.Join(got, " ") != "f-0 f-1 f-2" {
		t.Fatalf("followed %v", got)
	}
	// A long poll is woken by the next event; a sweep marks one stuck.
	done := make(chan []apiclient.Event)
	go func() {
		done <- take(apiclient.FeedQuery{After: rest[0].ID, ToStatus: apiclient.StatusStuck, Wait: time.Minute}, 1)
	}()
	if _, err := s.db.Pool.Exec(ctx, `UPDATE delegations SET deadline = now() - interval '1 second' WHERE delegation_id = 'f-1'`); err != nil {
		t.Fatal(err)
	}
	sw, err := sweep.New(s.db.Pool, sweep.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case evs := <-done:
		if evs[0].DelegationID != "f-1" || evs[0].FromStatus != apiclient.StatusQueued {
			t.Fatalf("woken with %+v", evs)
		}
	case <-time.After(time.Minute):
		t.Fatal("the long poll was not woken within a minute")
	}
}

// TestTypesFollowTheOpenAPIDocument: each type has exactly the properties
// of its schema, by JSON name.
func TestTypesFollowTheOpenAPIDocument(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(api.OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	types := map[string]any{
		"Delegation": apiclient.Delegation{}, "Event": apiclient.Event{}, "InsertRequest": apiclient.InsertRequest{},
		"InsertResponse": apiclient.InsertResponse{}, "RetryRequest": apiclient.RetryRequest{}, "RetryResponse": apiclient.RetryResponse{},
		"ListResponse": apiclient.ListResponse{}, "TransitionRequest": apiclient.TransitionRequest{},
		"TransitionResponse": apiclient.TransitionResponse{}, "HeartbeatResponse": apiclient.HeartbeatResponse{},
		"HeartbeatsRequest": apiclient.HeartbeatsRequest{}, "HeartbeatsResponse": apiclient.HeartbeatsResponse{},
		"HeartbeatRequest": apiclient.HeartbeatRequest{}, "RetryPolicy": apiclient.RetryPolicy{},
		"RetryPolicyInput": apiclient.RetryPolicy{}, "ClaimRequest": apiclient.ClaimRequest{}, "ClaimResponse": apiclient.ClaimResponse{},
		"EventsResponse": apiclient.EventsResponse{}, "AttemptsResponse": apiclient.AttemptsResponse{},
		"FeedResponse": apiclient.FeedResponse{}, "Counts": apiclient.Counts{}, "Summary": apiclient.Summary{},
		"WebhookRequest": apiclient.WebhookRequest{}, "WebhookSubscription": apiclient.WebhookSubscription{},
		"WebhookSecret": apiclient.WebhookSecret{}, "WebhooksResponse": apiclient.WebhooksResponse{},
		"WebhookAttempt": apiclient.WebhookAttempt{}, "WebhookAttemptsResponse": apiclient.WebhookAttemptsResponse{},
	}
	for name, schema := range doc.Components.Schemas {
		v, ok := types[name]
		if !ok {
			if len(schema.Properties) > 0 && name != "Problem" {
				t.Errorf("schema %s has no type in apiclient", name)
			}
			continue
		}
		var want, got []string
		for p := range schema.Properties {
			want = append(want, p)
		}
		got = jsonNames(reflect.TypeOf(v))
		sort.Strings(want)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: fields %v, schema properties %v", name, got, want)
		}
	}
}

// jsonNames lists the JSON names of the fields of struct type rt, those of
// embedded structs included, as encoding/json reads them.
func jsonNames(rt reflect.Type) []string {
	var names []string
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Anonymous && f.Tag.Get("json") == "" {
			names = append(names, jsonNames(f.Type)...)
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, tag)
	}
	return names
}

// TestLinksNoDriver: a service that talks to the API links the standard
// library and this package, not pgx or the server.
func TestLinksNoDriver(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/tasksweeper/sweeper/apiclient" {
			t.Errorf("apiclient depends on %s", dep)
		}
	}
}

// TestWebhooks: the admin methods of /v1/webhooks against the real API,
// through strict clients (an answer with a field the types lack fails).
func TestWebhooks(t *testing.T) {
	t.Parallel()
	s := newServer(t, api.Options{})
	ctx := context.Background()
	admin, caller := s.clients["admin"], s.clients["billing"]

	created, err := admin.CreateWebhook(ctx, apiclient.WebhookRequest{URL: "https://hooks.example.com/in",
		Events: []apiclient.Status{apiclient.StatusStuck, apiclient.StatusFailed}, CallerID: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.ID, "wh_") || !strings.HasPrefix(created.Secret, "whsec_") || created.State != "active" ||
		created.CallerID != "billing" || !slices.Equal(created.Events, []apiclient.Status{apiclient.StatusStuck, apiclient.StatusFailed}) {
		t.Fatalf("CreateWebhook = %+v", created)
	}
	var pe *apiclient.ProblemError
	if _, err := caller.CreateWebhook(ctx, apiclient.WebhookRequest{URL: "https://hooks.example.com/x"}); !errors.As(err, &pe) || pe.Status != 403 {
		t.Fatalf("a caller token's CreateWebhook: %v, want 403", err)
	}
	if _, err := admin.CreateWebhook(ctx, apiclient.WebhookRequest{URL: "ftp://hooks.example.com/x"}); !errors.As(err, &pe) || pe.Slug() != "invalid-field" {
		t.Fatalf("CreateWebhook of an ftp URL: %v, want invalid-field", err)
	}

	list, err := admin.ListWebhooks(ctx)
	if err != nil || len(list) != 1 || list[0].ID != created.ID || list[0].URL != created.URL {
		t.Fatalf("ListWebhooks = %+v, %v", list, err)
	}
	got, err := admin.GetWebhook(ctx, created.ID)
	if err != nil || got.ID != created.ID || got.Cursor != created.Cursor {
		t.Fatalf("GetWebhook = %+v, %v", got, err)
	}

	rotated, err := admin.RotateWebhookSecret(ctx, created.ID)
	if err != nil || rotated.Secret == created.Secret || !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.RotationEndsAt == nil {
		t.Fatalf("RotateWebhookSecret = %+v, %v", rotated, err)
	}

	if _, err := s.db.Pool.Exec(ctx, `UPDATE webhook_subscriptions SET state = 'paused', state_reason = 'test' WHERE id = $1`, created.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := admin.GetWebhook(ctx, created.ID); err != nil || got.State != "paused" || got.StateReason != "test" {
		t.Fatalf("GetWebhook of a paused one = %+v, %v", got, err)
	}
	resumed, err := admin.ResumeWebhook(ctx, created.ID)
	if err != nil || resumed.State != "active" {
		t.Fatalf("ResumeWebhook = %+v, %v", resumed, err)
	}

	for i, outcome := range []string{"failed", "delivered"} {
		if _, err := s.db.Pool.Exec(ctx, `INSERT INTO webhook_attempts (subscription_id, event_id, webhook_id, status_code, latency_ms, outcome)
			VALUES ($1, $2, $3, 200, 12, $4)`, created.ID, int64(i+1), fmt.Sprintf("evt_%d", i+1), outcome); err != nil {
			t.Fatal(err)
		}
	}
	atts, err := admin.WebhookAttempts(ctx, created.ID, 0)
	if err != nil || len(atts) != 2 || atts[0].Outcome != "delivered" || atts[0].WebhookID != "evt_2" || atts[0].StatusCode != 200 || atts[1].EventID != 1 {
		t.Fatalf("WebhookAttempts = %+v, %v", atts, err)
	}
	if atts, err := admin.WebhookAttempts(ctx, created.ID, 1); err != nil || len(atts) != 1 || atts[0].EventID != 2 {
		t.Fatalf("WebhookAttempts(limit 1) = %+v, %v", atts, err)
	}

	if err := admin.DeleteWebhook(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.GetWebhook(ctx, created.ID); !apiclient.IsNotFound(err) {
		t.Fatalf("GetWebhook after DeleteWebhook: %v, want not found", err)
	}
	if err := admin.DeleteWebhook(ctx, created.ID); !apiclient.IsNotFound(err) {
		t.Fatalf("DeleteWebhook twice: %v, want not found", err)
	}
}
